"""The image configuration (no numpy here: the command line and ``study plan`` read it cheaply).

:class:`ImageConfig` is how image sites become tensors, for a study's ``data.image`` and for
``bioscale data pack``; :class:`DecodeConfig` is what :func:`bioscale.data.images.decode_rows`
does to one batch, resolved from it. ``bioscale.data.images`` re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bioscale.errors import ConfigError

NORMALISE_KINDS = ("percentile", "plate_controls", "none")
CROP_MODES = ("random", "centre", "tiles")
BAD_SAMPLE_POLICIES = ("error", "skip")


@dataclass(frozen=True, kw_only=True)
class ImageConfig:
    """How image sites become tensors: the one image configuration of bioscale.

    A study's ``data.image`` (:class:`bioscale.study.spec.ImageSpec` adds how trials schedule
    decoding) and ``bioscale data pack`` (:class:`bioscale.data.pack.PackConfig` adds how crops
    are stored) are this config; :meth:`decode_config` resolves it into what
    :func:`decode_rows` does to one batch.

    - ``dyes``: the channel order (default: the manifest's dyes, in its order);
    - ``crop``: crop side in pixels after ``downsample``-fold block averaging; training takes
      ``crops_per_site`` random crops per site per pass, evaluation the centre crop;
    - ``normalise``: ``percentile`` (per site and channel, clip at the 1st/99.9th percentile and
      scale to [0, 1]), ``plate_controls`` (the same bounds pooled over the plate's negative
      control sites, :func:`plate_control_stats`, so a compound's effect on brightness survives)
      or ``none`` (raw intensities);
    - ``illumination``: divide each channel by the manifest's ``illum_<Dye>`` function;
    - ``bad_samples``: a site whose TIFF cannot be read: ``error`` stops, naming the sample and
      file; ``skip`` drops it, counts it and lists it — up to ``max_skipped`` (a fraction of the
      sites), past which the run fails.
    """

    dyes: list[str] | None = None
    crop: int = 64
    crops_per_site: int = 1
    downsample: int = 1
    normalise: Literal["percentile", "plate_controls", "none"] = "percentile"
    illumination: bool = False
    bad_samples: Literal["error", "skip"] = "error"
    max_skipped: float = 0.01

    #: fields added after image settings entered trial keys: at their default they stay out of
    #: a trial's identity, so the keys of existing studies hold (``identity``)
    _LATER_FIELDS = ("illumination",)

    def __post_init__(self) -> None:
        if self.crop < 8 or self.crops_per_site < 1 or self.downsample < 1:
            raise ConfigError("image: crop >= 8 pixels, crops_per_site >= 1, downsample >= 1")
        if self.normalise not in NORMALISE_KINDS:
            raise ConfigError(
                f"image.normalise {self.normalise!r}: choose one of {', '.join(NORMALISE_KINDS)}"
            )
        if self.bad_samples not in BAD_SAMPLE_POLICIES:
            raise ConfigError(
                f"image.bad_samples {self.bad_samples!r}: choose one of "
                f"{', '.join(BAD_SAMPLE_POLICIES)}"
            )
        if not 0.0 <= self.max_skipped <= 1.0:
            raise ConfigError("image.max_skipped is a fraction of the sites, in [0, 1]")
        if self.dyes is not None and (not self.dyes or len(set(self.dyes)) != len(self.dyes)):
            raise ConfigError("image.dyes: name each dye once (or leave it out for all of them)")

    def identity(self) -> dict:
        """What of this config enters a trial's key (every field, later ones when set)."""
        from dataclasses import asdict, fields

        out = asdict(self)
        defaults = {f.name: f.default for f in fields(self)}
        for name in self._LATER_FIELDS:
            if out[name] == defaults[name]:
                del out[name]
        return out

    def decode_config(
        self, dyes: list[str] | tuple[str, ...], *, mode: str = "random", per_site: int = 1
    ) -> DecodeConfig:
        """What decoding does to a batch of ``dyes`` sites: ``mode`` random (training), centre
        or tiles (evaluation), ``per_site`` crops per site; bad sites as ``bad_samples``."""
        return DecodeConfig(
            dyes=tuple(dyes),
            crop=CropConfig(
                size=self.crop, per_site=per_site, mode=mode, downsample=self.downsample
            ),
            normalise=NormaliseConfig(kind=self.normalise),
            illumination=self.illumination,
            bad_sample_policy=self.bad_samples,
        )


@dataclass(frozen=True, kw_only=True)
class NormaliseConfig:
    """Per-channel intensity normalisation to [0, 1].

    ``percentile``: clip each channel of each site at its ``low``/``high`` percentiles and scale.
    ``plate_controls``: the same with percentiles pooled over the plate's control sites
    (see :func:`plate_control_stats`), so a compound's effect on brightness survives.
    ``none``: raw intensities as float32 (uint16 → [0, 65535]).
    """

    kind: str = "percentile"
    low: float = 1.0  # percent
    high: float = 99.9  # percent

    def __post_init__(self) -> None:
        if self.kind not in NORMALISE_KINDS:
            raise ValueError(f"normalise.kind {self.kind!r}; choose one of {NORMALISE_KINDS}")
        if not 0.0 <= self.low < self.high <= 100.0:
            raise ValueError(
                f"normalise percentiles need 0 <= low < high <= 100, got {self.low}, {self.high}"
            )


@dataclass(frozen=True, kw_only=True)
class CropConfig:
    """Crops of a (downsampled) site: ``random`` (training), ``centre`` or ``tiles`` (evaluation).

    ``size`` is in pixels after downsampling; ``None`` keeps the whole site. ``tiles`` cuts the
    site into a non-overlapping grid of ``size``-pixel tiles, centred, and ignores ``per_site``.
    """

    size: int | None = 256
    per_site: int = 1
    mode: str = "random"
    downsample: int = 1  # integer factor; block-mean pooling before cropping

    def __post_init__(self) -> None:
        if self.mode not in CROP_MODES:
            raise ValueError(f"crop.mode {self.mode!r}; choose one of {CROP_MODES}")
        if (self.size is not None and self.size < 1) or self.per_site < 1 or self.downsample < 1:
            raise ValueError("crop.size, crop.per_site and crop.downsample must be >= 1")


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    """Everything :func:`decode_rows` does to a site, resolved for one call (one crop mode):
    from an :class:`ImageConfig` (:meth:`ImageConfig.decode_config`) or from
    :func:`decode_batch`'s keywords. Not a setting of its own."""

    dyes: tuple[str, ...]
    crop: CropConfig = field(default_factory=CropConfig)
    normalise: NormaliseConfig = field(default_factory=NormaliseConfig)
    illumination: bool = False  # divide by ``illum_<Dye>`` when the manifest has them
    bad_sample_policy: str = "error"

    def __post_init__(self) -> None:
        if not self.dyes:
            raise ValueError("decode needs at least one dye")
        if self.bad_sample_policy not in BAD_SAMPLE_POLICIES:
            raise ValueError(
                f"bad_sample_policy {self.bad_sample_policy!r}; choose one of {BAD_SAMPLE_POLICIES}"
            )

    def crops_per_site(self, height: int, width: int) -> int:
        c = self.crop
        if c.size is None or c.mode != "tiles":
            return 1 if c.size is None else c.per_site
        return max(1, height // c.downsample // c.size) * max(1, width // c.downsample // c.size)
