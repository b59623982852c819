"""``cellpainting``: one sample is an image site, one 16-bit TIFF per dye (``path_<Dye>``
columns, the dye order in the schema metadata), optionally with an expert map (``path_map``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bioscale.data import manifest as mf
from bioscale.data.kinds import DataCpus, TrialSets, register
from bioscale.data.kinds.plates import PlateKind
from bioscale.errors import ConfigError, ManifestError


@register
class CellPainting(PlateKind):
    name = "cellpainting"
    images = True
    streams = True
    settings = frozenset({"image"})

    def alignment_refusal(self, evaluation: str) -> str | None:
        if evaluation in ("neural", "threedpc"):
            return (
                f"alignment.{evaluation} shows the model RGB stimuli; it applies to natural-image "
                "studies (3-channel rungs), not data.kind 'cellpainting' (Cell Painting rungs read "
                "the study's dye channels)"
            )
        return None

    def identity(self, data: Any) -> dict[str, Any]:
        from dataclasses import asdict

        return {"image": asdict(data.image)}  # how pixels become tensors changes what is learnt

    def channels(self, data: Any, path: str | Path) -> list[str]:
        """The channel order: ``data.image.dyes`` or the manifest's dyes."""
        import pyarrow.parquet as pq

        available = mf.dyes_of(pq.read_schema(path), str(path))
        dyes = data.image.dyes or available
        missing = [d for d in dyes if d not in available]
        if missing:
            raise ConfigError(
                f"data.image.dyes: {', '.join(missing)} not in manifest {path} "
                f"(it has {', '.join(available)})"
            )
        return list(dyes)

    def sample_shape(self, data: Any, info: mf.ManifestInfo, path: str | Path) -> tuple[int, ...]:
        if info.n_features is not None:
            raise ManifestError(
                f"manifest {path} holds profiles; data.kind 'cellpainting' needs an image "
                "manifest (path_<Dye> columns)"
            )
        return (len(self.channels(data, path)), data.image.crop, data.image.crop)

    def any_sample_shape(self, data: Any) -> tuple[int, ...]:
        return (3, data.image.crop, data.image.crop)

    def has_maps(self, path: str | Path) -> bool:
        from bioscale.data.pipeline import manifest_has_maps

        return manifest_has_maps(path)

    def sample_images(self, data: Any, path: str | Path, size: int, limit: int) -> list[Any]:
        from bioscale.data.images import decode_batch
        from bioscale.data.kinds import first_rows

        dyes = self.channels(data, path)
        rows = first_rows(path, ["sample_id", *[f"path_{d}" for d in dyes]], limit)
        image, decoded = data.image, []
        for i in range(len(rows["sample_id"])):  # one site at a time: sites may differ in size
            out = decode_batch(
                {k: v[i : i + 1] for k, v in rows.items()},
                dyes=dyes,
                crop=None,
                crop_mode="centre",
                downsample=image.downsample,
                rng=0,
                normalise=image.normalise,
                bad_sample_policy=image.bad_samples,
            )
            decoded.append(out["x"][out["ok"]])
        return decoded

    def skips_bad_samples(self, data: Any) -> bool:
        return data.image.bad_samples == "skip"

    def datasets(
        self,
        data: Any,
        manifest: str,
        index: Any,
        sets: TrialSets,
        cpus: DataCpus,
        skips: Any = None,
    ) -> dict[str, Any]:
        """Training crops are decoded as the workers consume them (fresh random crops every
        pass); the small evaluation sets are decoded once (centre crops)."""
        from bioscale.data.pipeline import MAP_DYE, decoded_sites, read_sites

        image = data.image
        dyes = self.channels(data, manifest)
        with_maps = self.has_maps(manifest)
        sites = read_sites(
            manifest, [*dyes, MAP_DYE] if with_maps else dyes, cpus_per_task=cpus.select
        )
        out = {}
        for name, targets in sets.named():
            training = name == "train"
            ds = decoded_sites(
                sites,
                index.sample_id[targets.rows],
                targets.columns,
                dyes=dyes,
                crop=image.crop,
                crops_per_site=image.crops_per_site if training else 1,
                crop_mode="random" if training else "centre",
                downsample=image.downsample,
                normalise=image.normalise,
                seed=None if training else 0,
                batch_size=image.decode_batch_size,
                cpus_per_task=cpus.decode,
                select_cpus=cpus.select,
                with_maps=with_maps,
                skips=skips,
            )
            out[name] = ds if training else ds.materialize()
        return out
