"""``cellpainting``: one sample is an image site, one 16-bit TIFF per dye (``path_<Dye>``
columns, the dye order in the schema metadata), optionally with an expert map (``path_map``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioscale.data.kinds import DataCpus, Synthesized, Synthetic, TrialSets, register
from bioscale.data.kinds.plates import PlateKind
from bioscale.errors import ConfigError, ManifestError

if TYPE_CHECKING:
    from bioscale.data import manifest as mf


@register
class CellPainting(PlateKind):
    name = "cellpainting"
    images = True
    streams = True
    settings = frozenset({"image"})
    synthetic = Synthetic(
        help="synthetic 5-dye Cell Painting sites (LZW TIFFs, LoadData CSV, JUMP-style metadata)",
        config="bioscale.data.synth_images:SynthImagesConfig",
        aliases=("images",),
    )

    def synthesize(self, config: Any, out: str | Path) -> Synthesized:
        from bioscale.data.synth_images import generate_images

        r = generate_images(config, out)
        return Synthesized(
            manifest=r.manifest,
            summary=f"wrote {r.n_sites} sites ({r.n_files} LZW TIFFs) under {r.images}, load "
            f"data {r.load_data}, JUMP-style metadata in {r.metadata}",
        )

    def alignment_refusal(self, evaluation: str) -> str | None:
        if evaluation in ("neural", "threedpc"):
            return (
                f"alignment.{evaluation} shows the model RGB stimuli; it applies to natural-image "
                "studies (3-channel rungs), not data.kind 'cellpainting' (Cell Painting rungs read "
                "the study's dye channels)"
            )
        return None

    def identity(self, data: Any) -> dict[str, Any]:
        return {"image": data.image.identity()}  # how pixels become tensors changes what is learnt

    def channels(self, data: Any, path: str | Path) -> list[str]:
        """The channel order: ``data.image.dyes`` or the manifest's dyes."""
        import pyarrow.parquet as pq

        from bioscale.data import manifest as mf

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

    def check(self, data: Any, path: str | Path) -> None:
        """The manifest has what ``data.image`` asks of it: control sites on every plate for
        ``normalise: plate_controls``, an illumination function per dye for ``illumination``."""
        import pyarrow.parquet as pq

        from bioscale.data import manifest as mf

        image = data.image
        if image.illumination:
            names = set(pq.read_schema(path).names)
            lacking = [d for d in self.channels(data, path) if f"{mf.ILLUM_PREFIX}{d}" not in names]
            if lacking:
                raise ConfigError(
                    f"data.image.illumination: manifest {path} has no illumination function "
                    f"for {', '.join(lacking)} (columns {mf.ILLUM_PREFIX}<Dye>); import them "
                    "(bioscale data import cellprofiler reads Illum columns) or set "
                    "illumination: false"
                )
        if image.normalise == "plate_controls":
            table = pq.read_table(path, columns=["plate", "group"])
            plates = set(table.column("plate").to_pylist())
            with_controls = {
                p
                for p, g in zip(
                    table.column("plate").to_pylist(),
                    table.column("group").to_pylist(),
                    strict=True,
                )
                if g == "control"
            }
            lacking = sorted(plates - with_controls)
            if lacking:
                raise ConfigError(
                    f"data.image.normalise: plate_controls pools each plate's negative-control "
                    f"sites, but plate(s) {', '.join(lacking[:5])} of {path} have none; use "
                    "normalise: percentile"
                )

    def prepare(self, data: Any, path: str | Path, progress: Any = None) -> Any:
        """``normalise: plate_controls``: each plate's control bounds, read once for the study."""
        if data.image.normalise != "plate_controls":
            return None
        from bioscale.data.images import plate_control_stats

        return plate_control_stats(str(path), dyes=self.channels(data, path), progress=progress)

    def sample_images(self, data: Any, path: str | Path, size: int, limit: int) -> list[Any]:
        from dataclasses import replace

        from bioscale.data.images import decode_rows
        from bioscale.data.kinds import first_rows
        from bioscale.data.pipeline import site_columns

        image = data.image
        dyes = self.channels(data, path)
        columns = ["sample_id", *[f"path_{d}" for d in dyes], *site_columns(image, dyes)]
        rows = first_rows(path, columns, limit)
        cfg = image.decode_config(dyes, mode="centre")
        cfg = replace(cfg, crop=replace(cfg.crop, size=None))  # whole sites
        stats = self.prepare(data, path)
        decoded = []
        for i in range(len(rows["sample_id"])):  # one site at a time: sites may differ in size
            batch = {k: v[i : i + 1] for k, v in rows.items()}
            out = decode_rows(batch, cfg, rng=0, plate_stats=stats)
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
        prepared: Any = None,
    ) -> dict[str, Any]:
        """Training crops are decoded as the workers consume them (fresh random crops every
        pass); the small evaluation sets are decoded once (centre crops). ``prepared``: the
        plate-control bounds of ``normalise: plate_controls``."""
        from bioscale.data.pipeline import MAP_DYE, decoded_sites, read_sites, site_columns

        image = data.image
        dyes = self.channels(data, manifest)
        with_maps = self.has_maps(manifest)
        read = [*dyes, MAP_DYE] if with_maps else dyes
        sites = read_sites(
            manifest, read, extra=site_columns(image, read), cpus_per_task=cpus.select
        )
        out = {}
        for name, targets in sets.named():
            training = name == "train"
            ds = decoded_sites(
                sites,
                index.sample_id[targets.rows],
                targets.columns,
                image=image,
                dyes=dyes,
                training=training,
                seed=None if training else 0,
                batch_size=image.decode_batch_size,
                cpus_per_task=cpus.decode,
                select_cpus=cpus.select,
                with_maps=with_maps,
                skips=skips,
                plate_stats=prepared,
            )
            out[name] = ds if training else ds.materialize()
        return out
