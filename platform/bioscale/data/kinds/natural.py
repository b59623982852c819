"""``natural``: one sample is an RGB image with a class label and, optionally, a human importance
map (``sample_id, path_image, path_map, label, group``; ClickMe-style data). A class plays the
part of a compound and every image is its own well (``bioscale.data.natural.metadata_table``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bioscale.data.kinds import (
    DataCpus,
    DataKind,
    Synthesized,
    Synthetic,
    TrialSets,
    Wording,
    register,
)


@register
class Natural(DataKind):
    name = "natural"
    images = True
    streams = True
    novel_labels = False  # a class never trained on cannot be named by a classifier
    settings = frozenset({"image", "maps"})
    provides = frozenset({"labels"})
    wording = Wording(label="class", novel="novel classes", held_out="held-out images")
    # RGB images are resized to the crop (no dyes, tiles or intensity normalisation)
    image_fields = frozenset({"crop", "decode_batch_size", "decode_cpus"})
    synthetic = Synthetic(
        help="objects whose class is a small mark, with 'human' maps of the mark",
        config="bioscale.data.natural:SynthNaturalConfig",
    )

    def synthesize(self, config: Any, out: str | Path) -> Synthesized:
        from bioscale.data import natural

        path = natural.generate_natural(config, out)
        return Synthesized(manifest=Path(path), summary="wrote images, maps for part of them")

    def identity(self, data: Any) -> dict[str, Any]:
        from dataclasses import asdict

        # how pixels become tensors, and how human maps are blurred, change what a trial sees
        return {"image": data.image.identity(), "maps": asdict(data.maps)}

    def inspect(self, path: str | Path):
        from bioscale.data import natural

        return natural.inspect(path)

    def metadata(self, path: str | Path):
        from bioscale.data import natural

        return natural.metadata_table(path)

    def sample_shape(self, data: Any, info: Any, path: str | Path) -> tuple[int, ...]:
        return (3, data.image.crop, data.image.crop)

    def any_sample_shape(self, data: Any) -> tuple[int, ...]:
        return (3, data.image.crop, data.image.crop)

    def has_maps(self, path: str | Path) -> bool:
        from bioscale.data.pipeline import manifest_has_maps

        return manifest_has_maps(path)

    def sample_images(self, data: Any, path: str | Path, size: int, limit: int) -> list[Any]:
        import numpy as np

        from bioscale.data import natural
        from bioscale.data.kinds import first_rows

        rows = first_rows(path, ["sample_id", "path_image"], limit)
        rows["path_map"] = np.array([None] * len(rows["sample_id"]), dtype=object)
        return [natural.decode_natural(rows, size=size, flip=False, seed=0)["x"]]

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
        from bioscale.data.pipeline import decoded_natural

        image = data.image
        out = {}
        for name, targets in sets.named():
            training = name == "train"
            ds = decoded_natural(
                manifest,
                index.sample_id[targets.rows],
                targets.columns,
                size=image.crop,
                flip=training,
                seed=None if training else 0,
                batch_size=image.decode_batch_size,
                cpus_per_task=cpus.decode,
                select_cpus=cpus.select,
                maps=data.maps,
            )
            out[name] = ds if training else ds.materialize()
        return out
