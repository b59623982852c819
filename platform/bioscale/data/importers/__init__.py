"""Dataset importers: a dataset as users have it → a manifest (ARCHITECTURE contract).

One registry, ``IMPORTERS``, of every format for every data kind: an ``Importer`` names the
data kind of the manifest it writes and either reads image sites (``read_sites(cfg) ->
SiteTable``: ``cellprofiler``, LoadData CSV or CytoTable Parquet; everything after reading the
sites — the JUMP metadata join, compound groups, sample ids, writing — is shared here) or writes
its manifest itself (``write(cfg) -> Path``: the natural-image layouts ``natural-folder``,
``natural-clickme``, ``natural-fixations``; ``profiles``, well-level profile tables, whose
full options are ``bioscale.data.importers.profiles.ProfileImportConfig``). A new format is one new module that registers
itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bioscale.data import manifest as mf
from bioscale.data.groups import assign_groups
from bioscale.errors import ConfigError, ManifestError
from bioscale.registry import Registry

#: The five Cell Painting dyes in their conventional channel order; other dyes follow them.
CANONICAL_DYES = ("DNA", "ER", "RNA", "AGP", "Mito")
_MODULES = (
    "bioscale.data.importers.cellprofiler",
    "bioscale.data.importers.natural",
    "bioscale.data.importers.profiles",
)


@dataclass(frozen=True, kw_only=True)
class ImportConfig:
    """What to import and how.

    Args:
        input: the dataset's index file (LoadData CSV, CytoTable Parquet, ...).
        out: the manifest to write.
        root: folder that relative image paths (or bare file names) are resolved against.
        illum_root: folder of illumination functions (default: ``root``).
        metadata: folder holding JUMP tables and Drug Repurposing Hub annotations (searched
            recursively), or ``None`` to import images without perturbation metadata.
        source: data source name for sites whose load data and metadata carry none.
        dyes: keep only these dyes, in this order (default: every dye of the dataset).
        novel_fraction: share of each MoA's compounds assigned to ``novel``.
    """

    input: str
    out: str
    root: str | None = None
    illum_root: str | None = None
    metadata: str | None = None
    source: str | None = None
    dyes: tuple[str, ...] | None = None
    novel_fraction: float = 0.25
    #: fixations: the folder the fixation file's image paths are relative to, and the blur of
    #: each fixation in pixels of the original image
    images: str | None = None
    sigma_px: float = 25.0


@dataclass(kw_only=True)
class Site:
    """One imaged site as an importer read it (paths already resolved)."""

    plate: str
    well: str
    site: int
    paths: dict[str, str]
    illum: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    batch: str | None = None


@dataclass(kw_only=True)
class SiteTable:
    """An importer's output: sites and the dataset's dyes in channel order."""

    dyes: list[str]
    sites: list[Site]


@dataclass(frozen=True, kw_only=True)
class ImportSummary:
    path: Path
    n_sites: int
    dyes: list[str]
    n_annotated: int  # sites with a perturbation from the metadata
    groups: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class Importer:
    """One registered format: the data kind of the manifest it writes (``bioscale.data.kinds``)
    and how: reading image sites for the shared back half, or writing the manifest itself."""

    kind: str
    read_sites: Callable[[ImportConfig], SiteTable] | None = None
    write: Callable[[ImportConfig], Path] | None = None


IMPORTERS: Registry[Importer] = Registry("dataset importer")


def register_sites(name: str, kind: str):
    """Decorator: register ``read(cfg) -> SiteTable`` as format ``name`` of data kind ``kind``."""

    def add(read: Callable[[ImportConfig], SiteTable]):
        IMPORTERS.register(name, Importer(kind=kind, read_sites=read))
        return read

    return add


def register_writer(name: str, kind: str):
    """Decorator: register ``write(cfg) -> Path`` (the manifest) as format ``name``."""

    def add(write: Callable[[ImportConfig], Path]):
        IMPORTERS.register(name, Importer(kind=kind, write=write))
        return write

    return add


def _load_modules() -> None:
    for name in _MODULES:
        importlib.import_module(name)


def importer_names() -> list[str]:
    _load_modules()
    return IMPORTERS.names()


def order_dyes(dyes: list[str]) -> list[str]:
    """Canonical dyes first (DNA, ER, RNA, AGP, Mito, those present), then the rest as found."""
    return [d for d in CANONICAL_DYES if d in dyes] + [d for d in dyes if d not in CANONICAL_DYES]


def _check_paths(cfg: ImportConfig) -> None:
    """The input must be a file and the folders must exist (object-store URLs are not checked)."""
    local = [p for p in (cfg.input,) if "://" not in p]
    for path in local:
        if Path(path).is_dir():
            raise ManifestError(
                f"{path} is a folder; name the dataset's index file (a LoadData .csv or a "
                "CytoTable .parquet) inside it"
            )
        if not Path(path).exists():
            raise ManifestError(f"{path} does not exist")
    for flag, folder in (
        ("--root", cfg.root),
        ("--illum-root", cfg.illum_root),
        ("--metadata", cfg.metadata),
    ):
        if folder is not None and "://" not in folder and not Path(folder).is_dir():
            raise ManifestError(f"{flag} {folder} is not a folder; point it at an existing one")


def import_dataset(fmt: str, cfg: ImportConfig) -> ImportSummary:
    """Read ``cfg.input`` with the importer ``fmt``, join metadata, assign groups, write."""
    _load_modules()
    importer = IMPORTERS.get(fmt)
    if importer.read_sites is None:
        raise ConfigError(
            f"format {fmt!r} writes its manifest itself; use import_manifest({fmt!r}, cfg)"
        )
    _check_paths(cfg)
    table = importer.read_sites(cfg)
    dyes = table.dyes
    if cfg.dyes:
        absent = [d for d in cfg.dyes if d not in dyes]
        if absent:
            raise ManifestError(
                f"{cfg.input} has no dye(s) {', '.join(absent)}; it has {', '.join(dyes)}"
            )
        dyes = list(cfg.dyes)
    if not table.sites:
        raise ManifestError(f"{cfg.input} lists no image sites")
    return write_sites(table.sites, dyes, cfg)


def import_manifest(fmt: str, cfg: ImportConfig) -> Path:
    """Import ``cfg.input`` with any registered format; the manifest written."""
    _load_modules()
    importer = IMPORTERS.get(fmt)
    if importer.write is not None:
        return importer.write(cfg)
    return import_dataset(fmt, cfg).path


def write_sites(sites: list[Site], dyes: list[str], cfg: ImportConfig) -> ImportSummary:
    """The shared back half of every importer: metadata join, groups, manifest."""
    from bioscale.data.importers.jump import JumpMetadata

    seen: set[tuple[str, str, int]] = set()
    for s in sites:
        key = (s.plate, s.well, s.site)
        if key in seen:
            raise ManifestError(f"{cfg.input}: site {s.plate}/{s.well}/{s.site} is listed twice")
        seen.add(key)
    meta = (
        JumpMetadata.load(cfg.metadata, plates={s.plate for s in sites}) if cfg.metadata else None
    )
    cols: dict[str, list] = {c: [] for c in mf.METADATA_COLUMNS}
    for d in dyes:
        cols[f"{mf.PATH_PREFIX}{d}"] = []
    with_illum = all(d in s.illum for s in sites for d in dyes)
    if with_illum:
        for d in dyes:
            cols[f"{mf.ILLUM_PREFIX}{d}"] = []
    perturbations: dict[str, str | None] = {}
    controls: set[str] = set()
    genetic: set[str] = set()
    for s in sites:
        info = meta.lookup(s.plate, s.well) if meta else {}
        plate_info = meta.plate(s.plate) if meta else {}
        source = s.source or plate_info.get("source") or info.get("source") or cfg.source
        pid = info.get("perturbation_id")
        cols["sample_id"].append(f"{s.plate}_{s.well}_s{s.site}")
        cols["source"].append(source)
        cols["batch"].append(s.batch or plate_info.get("batch"))
        cols["plate"].append(s.plate)
        cols["well"].append(s.well)
        cols["site"].append(s.site)
        for c in ("perturbation_id", "perturbation_type", "inchikey", "smiles", "moa", "target"):
            cols[c].append(info.get(c))
        cols["concentration"].append(info.get("concentration"))
        for d in dyes:
            if d not in s.paths:
                raise ManifestError(
                    f"{cfg.input}: site {s.plate}/{s.well}/{s.site} has no file for dye {d}"
                )
            cols[f"{mf.PATH_PREFIX}{d}"].append(s.paths[d])
            if with_illum:
                cols[f"{mf.ILLUM_PREFIX}{d}"].append(s.illum[d])
        if pid is not None:
            perturbations[pid] = info.get("moa")
            if info.get("perturbation_type") == "control":
                controls.add(pid)
            elif info.get("perturbation_type") in mf.GENETIC_TYPES and info.get("target"):
                genetic.add(pid)
    groups = assign_groups(perturbations, controls, cfg.novel_fraction)
    # ORF/CRISPR wells of a known gene are evaluation data (the genetic task), never trained on
    groups.update({pid: "novel" for pid in genetic})
    # A site without a known perturbation carries no task label: IBP-only data ("extra").
    cols["group"] = [groups.get(p, "extra") if p else "extra" for p in cols["perturbation_id"]]
    path = mf.write_images(cfg.out, cols, dyes)
    counts: dict[str, int] = {}
    for g in cols["group"]:
        counts[g] = counts.get(g, 0) + 1
    return ImportSummary(
        path=path,
        n_sites=len(sites),
        dyes=list(dyes),
        n_annotated=sum(p is not None for p in cols["perturbation_id"]),
        groups=counts,
    )
