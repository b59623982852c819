"""Data kinds: what one sample is, and everything that depends on it, one module per kind.

A kind (``profiles``: a well's feature vector; ``cellpainting``: an image site, one channel per
dye; ``natural``: an RGB image with an optional human importance map; ``video``: a FeatureTracker
video with its tracking answer) owns how a manifest of that
kind is inspected and validated, which study settings apply to it, one sample's tensor shape,
whether samples carry maps, what of it enters a trial's identity, and the Ray Datasets a trial
reads. The study driver and the trials ask the kind (``get(spec.data.kind)``); nothing outside
this package compares kind names (ARCHITECTURE "Data kind").

Adding a kind is one module under ``bioscale/data/kinds/`` that subclasses ``DataKind`` and
registers itself with ``@register``, plus its line in ``_MODULES`` below.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bioscale.registry import Registry

if TYPE_CHECKING:
    import pyarrow as pa

    from bioscale.data.manifest import ManifestInfo
    from bioscale.data.splits import SampleIndex, SplitConfig

#: The modules that register the built-in kinds (imported on first use).
_MODULES = (
    "bioscale.data.kinds.profiles",
    "bioscale.data.kinds.cellpainting",
    "bioscale.data.kinds.natural",
    "bioscale.data.kinds.video",
)

KINDS: Registry[DataKind] = Registry("data kind")


@dataclass(frozen=True, kw_only=True)
class Wording:
    """How a kind's labels read in messages: ``{label} top-1 on {novel}`` / ``{held_out}``."""

    label: str  # what the probe predicts: "MoA", "class"
    novel: str  # the never-trained-on split
    held_out: str  # held-out samples of trained-on labels


@dataclass(frozen=True, kw_only=True)
class TrialSets:
    """Which rows (and integer labels) of the manifest each of a trial's datasets reads.

    Each entry is a ``Targets`` (``bioscale.objectives.base``): ``rows`` into the index and
    ``columns`` of labels aligned with them. ``held_out`` (optional) are the probe-test images
    that saliency/adversarial alignment reads."""

    train: Any
    val: Any
    probe: Any
    held_out: Any | None = None

    def named(self):
        """``(name, targets)`` of each dataset (``held_out`` only when set)."""
        yield from (("train", self.train), ("val", self.val), ("probe", self.probe))
        if self.held_out is not None:
            yield "held_out", self.held_out


@dataclass(frozen=True, kw_only=True)
class Synthetic:
    """A kind's synthetic generator, run as ``bioscale data synth <kind>``: its config is a
    frozen dataclass of scalar fields (``"module:Class"``, imported when used), each a
    ``--flag`` of the command; the kind's :meth:`DataKind.synthesize` writes the data."""

    help: str
    config: str
    #: other names the command accepts for the kind (kept for scripts that used them)
    aliases: tuple[str, ...] = ()

    def config_class(self) -> type:
        module, name = self.config.split(":")
        return getattr(importlib.import_module(module), name)


@dataclass(frozen=True, kw_only=True)
class Synthesized:
    """What a synthetic generator wrote: the manifest to point ``data.manifest`` at, and a line
    for the console."""

    manifest: Path
    summary: str


@dataclass(frozen=True, kw_only=True)
class DataCpus:
    """Logical CPUs of a trial's Ray Data tasks: row selection and, for images, decoding."""

    select: float
    decode: float


class DataKind:
    """Base class of a data kind; subclasses set the class attributes and override what differs.

    Methods take the study's ``data:`` section (``bioscale.study.spec.DataSpec``: ``manifest``,
    ``splits``, ``image``, ``maps``, ``non_finite``) as ``data``.
    """

    name: ClassVar[str]
    #: samples are images: rungs read (C, H, W) crops, human maps may apply
    images: ClassVar[bool] = False
    #: a trial's training input is decoded while its workers train (Ray Data tasks hold CPUs for
    #: the whole trial), and workers never keep an epoch in memory (each draws fresh crops)
    streams: ClassVar[bool] = False
    #: what the samples carry that evaluation tasks read (``bioscale.eval.config.EvalTask.needs``):
    #: ``plates`` (wells on plates with negative controls), ``labels``, ``targets``
    provides: ClassVar[frozenset[str]] = frozenset({"labels"})
    #: the probe sets include never-trained-on labels (``novel_test``)
    novel_labels: ClassVar[bool] = True
    #: trials are scored by probes of frozen embeddings on the fixed probe wells (``False``: by
    #: the network's own read-out alone, ``head_evaluation``, on the ``novel_test`` samples)
    probes: ClassVar[bool] = True
    #: ``data.splits`` when a study leaves them at the defaults (``None``: ``SplitConfig()``)
    default_splits: ClassVar[SplitConfig | None] = None
    #: the settings of ``data:`` this kind reads besides ``manifest`` and ``splits``
    #: (``image``, ``maps``, ``non_finite``, ``synthetic``)
    settings: ClassVar[frozenset[str]] = frozenset()
    #: the fields of ``data.image`` this kind reads (``None``: all of them); setting another
    #: one is refused at load rather than silently ignored
    image_fields: ClassVar[frozenset[str] | None] = None
    wording: ClassVar[Wording]
    #: the kind's synthetic generator (``bioscale data synth <kind>``), or ``None``
    synthetic: ClassVar[Synthetic | None] = None

    # ------------------------------------------------------------------ the study's settings
    def validate(self, data: Any) -> None:
        """Raise ``ConfigError`` for ``data:`` settings this kind cannot use (called at load)."""
        from bioscale.errors import ConfigError

        for setting in ("image", "maps", "non_finite", "preprocess"):
            if setting in self.settings:
                continue
            if getattr(data, setting) != _default(data, setting):
                raise ConfigError(
                    f"data.{setting} does not apply to data.kind {self.name!r}"
                    f"{self._setting_hint(setting)}: remove it"
                )
        if "image" in self.settings and self.image_fields is not None:
            ignored = [
                f.name
                for f in dataclasses.fields(data.image)
                if f.name not in self.image_fields
                and getattr(data.image, f.name) != _default(data.image, f.name)
            ]
            if ignored:
                raise ConfigError(
                    f"data.image.{', data.image.'.join(ignored)} does not apply to data.kind "
                    f"{self.name!r} (it reads {', '.join(sorted(self.image_fields))}): remove it"
                )
        if data.synthetic is not None and "synthetic" not in self.settings:
            raise ConfigError(
                "data.synthetic generates profiles; for images run `bioscale data synth "
                f"{self.name}` and point data.manifest at the manifest it writes"
            )

    @staticmethod
    def _setting_hint(setting: str) -> str:
        return {
            "image": " (it sets how image sites become tensors)",
            "maps": " (it sets how natural images' human maps are blurred)",
            "non_finite": " (profiles only: what to do with NaN/Inf features)",
            "preprocess": " (profiles only: how features are normalised and selected)",
        }[setting]

    def alignment_refusal(self, evaluation: str) -> str | None:
        """Why ``alignment.<evaluation>`` cannot run on this kind, or ``None``."""
        return None

    def head_evaluation(self, data: Any, index: SampleIndex) -> Any:
        """The evaluation of the trained network's own read-out on the probe set that this data
        asks for (``bioscale.eval.final.FinalConfig.tracking``), or ``None`` (default: none)."""
        return None

    def identity(self, data: Any) -> dict[str, Any]:
        """What of ``data:`` changes what a trial learns, beyond rows and labels (trial keys)."""
        return {}

    # -------------------------------------------------------------------------- the manifest
    def inspect(self, path: str | Path) -> ManifestInfo:
        """Validate and hash a manifest of this kind."""
        raise NotImplementedError

    def metadata(self, path: str | Path) -> pa.Table:
        """The manifest's metadata columns (``bioscale.data.manifest.METADATA_COLUMNS``)."""
        raise NotImplementedError

    def check(self, data: Any, path: str | Path) -> None:
        """Checks of the samples themselves that must pass before any compute (default: none)."""

    def excluded(self, data: Any, path: str | Path) -> set[str]:
        """Sample ids the study's settings leave out of every role (default: none)."""
        return set()

    def sample_shape(self, data: Any, info: ManifestInfo, path: str | Path) -> tuple[int, ...]:
        """One training sample's tensor shape."""
        raise NotImplementedError

    def any_sample_shape(self, data: Any) -> tuple[int, ...]:
        """A valid sample shape without reading the manifest (for parameter-free model builds,
        whose layer names depend on neither the input size nor the channel count)."""
        raise NotImplementedError

    def has_maps(self, path: str | Path) -> bool:
        """Whether the manifest's samples carry human/expert importance maps."""
        return False

    def channels(self, data: Any, path: str | Path) -> list[str] | None:
        """Names of the input channels in order (Cell Painting dyes), or ``None``."""
        return None

    def sample_images(self, data: Any, path: str | Path, size: int, limit: int) -> list[Any]:
        """Up to ``limit`` whole samples (an evenly spread, fixed choice), decoded as trials decode
        them, as a list of (n, C, H, W) float32 batches (images only; e.g. for MACO's spectrum)."""
        from bioscale.errors import ConfigError

        raise ConfigError(f"data.kind {self.name!r} samples are not images")

    def artifacts(self, prepared: Any, folder: Path) -> list[Path]:
        """Files that keep what :meth:`prepare` made with the study (written into ``folder``,
        logged on the study's run); default: none."""
        return []

    def load_prepared(self, data: Any, folder: Path) -> Any:
        """What :meth:`artifacts` kept in ``folder``, when it matches ``data`` (tools on finished
        trials reuse it instead of preparing again); default: ``None``."""
        return None

    def synthesize(self, config: Any, out: str | Path) -> Synthesized:
        """Generate a synthetic dataset of this kind (``config``: an instance of
        ``synthetic.config``) into the folder ``out``."""
        from bioscale.errors import ConfigError

        raise ConfigError(f"data.kind {self.name!r} has no synthetic generator")

    # ----------------------------------------------------------------------------- a trial
    def prepare(self, data: Any, path: str | Path, progress: Any = None) -> Any:
        """What every trial's datasets need that is computed from the whole manifest, once, by
        the study's driver before any trial starts (handed to :meth:`datasets` as ``prepared``;
        e.g. plate-control normalisation bounds). ``progress(done, total)`` reports long work.
        Default: nothing."""
        return None

    def skips_bad_samples(self, data: Any) -> bool:
        """Whether unreadable samples are dropped into a ledger instead of failing the trial."""
        return False

    def datasets(
        self,
        data: Any,
        manifest: str,
        index: SampleIndex,
        sets: TrialSets,
        cpus: DataCpus,
        skips: Any = None,
        prepared: Any = None,
    ) -> dict[str, Any]:
        """A trial's Ray Datasets: ``train`` (split across workers), ``val``, ``probe`` and, when
        ``sets.held_out`` is given, ``held_out``; ``prepared`` is what :meth:`prepare` made."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A study's manifest, opened once (by ``open_manifest``) and handed down: its identity
    (``info``: path, sha256, rows), what one sample is, and the index of its samples' roles."""

    info: ManifestInfo
    kind: str
    sample_shape: tuple[int, ...]
    #: input channel names in order (Cell Painting dyes), or None
    channels: tuple[str, ...] | None
    has_maps: bool
    index: SampleIndex

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def sha(self) -> str:
        return self.info.sha

    @property
    def n_rows(self) -> int:
        return self.info.n_rows

    @property
    def n_features(self) -> int | None:
        return self.info.n_features


def first_rows(path: str | Path, columns: list[str], limit: int) -> dict[str, Any]:
    """Up to ``limit`` manifest rows (a fixed, evenly spread choice), ``columns`` only."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=columns)
    n = table.num_rows
    take = np.unique(np.linspace(0, n - 1, min(limit, n)).round().astype(np.int64))
    picked = table.take(take)
    return {c: picked.column(c).to_numpy(zero_copy_only=False) for c in columns}


def read_index(data: Any, path: str | Path) -> SampleIndex:
    """The manifest's metadata and fixed roles (the same in the driver and every trial); samples
    the study's settings leave out (``data.non_finite: drop``) are dropped before roles are
    assigned, as if they were not in the manifest."""
    import numpy as np
    import pyarrow as pa

    from bioscale.data.splits import SampleIndex
    from bioscale.errors import ManifestError

    kind = get(data.kind)
    table = kind.metadata(path)
    if table.num_rows == 0:
        raise ManifestError(
            f"manifest {path} has no rows; import or generate samples into it first"
        )
    excluded = kind.excluded(data, path)
    if excluded:
        ids = np.asarray(table.column("sample_id").to_pylist(), dtype=object)
        table = table.filter(pa.array(~np.isin(ids, sorted(excluded))))
    return SampleIndex.from_table(table, data.splits)


def open_manifest(data: Any, path: str | Path) -> Manifest:
    """Inspect, validate and index a study's manifest once, as its data kind reads it: the
    sample checks that must pass before any compute run here too."""
    kind = get(data.kind)
    info = kind.inspect(path)
    shape = kind.sample_shape(data, info, path)
    kind.check(data, path)
    channels = kind.channels(data, path)
    return Manifest(
        info=info,
        kind=kind.name,
        sample_shape=shape,
        channels=tuple(channels) if channels is not None else None,
        has_maps=kind.has_maps(path),
        index=read_index(data, path),
    )


def _default(config: Any, name: str) -> Any:
    """The default of dataclass field ``name`` of ``config``."""
    field = next(f for f in dataclasses.fields(config) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()


def register(cls: type[DataKind]) -> type[DataKind]:
    """Class decorator: register one instance of a ``DataKind`` subclass under its ``name``."""
    KINDS.register(cls.name, cls())
    return cls


def _load() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def get(name: str) -> DataKind:
    """The kind registered as ``name`` (an unknown name lists the known ones)."""
    _load()
    return KINDS.get(name)


def names() -> list[str]:
    _load()
    return KINDS.names()


def synthetic_kinds() -> dict[str, DataKind]:
    """The kinds with a synthetic generator, by every name ``data synth`` accepts (aliases
    included)."""
    _load()
    out: dict[str, DataKind] = {}
    for name in KINDS.names():
        kind = KINDS.get(name)
        if kind.synthetic is not None:
            out[name] = kind
            out.update({alias: kind for alias in kind.synthetic.aliases})
    return out
