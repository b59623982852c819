"""Natural images with human importance maps, as users have them, → a natural manifest
(``sample_id, path_image, path_map, label, group``; ``bioscale.data.natural``):

- ``natural-folder``: ``<root>/<class>/<image>`` with maps beside them in ``<root>/maps/``;
- ``natural-clickme``: the ClickMe release's TFRecords (a file, or a folder of ``*.tfrecord*``);
- ``natural-fixations``: a ``{"<class>/<file>": [[y, x], ...]}`` fixations JSON over the images in
  ``cfg.images``, each fixation blurred by ``cfg.sigma_px``.
"""

from __future__ import annotations

from pathlib import Path

from bioscale.data import natural
from bioscale.data.importers import ImportConfig, register_writer
from bioscale.errors import ConfigError


@register_writer("natural-folder", kind="natural")
def import_folder(cfg: ImportConfig) -> Path:
    return natural.import_folder(cfg.input, Path(cfg.out) / "manifest.parquet", cfg.novel_fraction)


@register_writer("natural-clickme", kind="natural")
def import_clickme(cfg: ImportConfig) -> Path:
    source = Path(cfg.input)
    shards = sorted(source.glob("*.tfrecord*")) if source.is_dir() else [source]
    return natural.import_clickme(shards, Path(cfg.out), cfg.novel_fraction)


@register_writer("natural-fixations", kind="natural")
def import_fixations(cfg: ImportConfig) -> Path:
    if cfg.images is None:
        raise ConfigError(
            "data import natural fixations needs --images DIR, the folder the fixations "
            "file's image paths are relative to"
        )
    return natural.import_fixations(cfg.input, cfg.images, Path(cfg.out), sigma_px=cfg.sigma_px)
