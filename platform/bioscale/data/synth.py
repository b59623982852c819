"""Synthetic well-level Cell Painting profiles with the structure real screens have.

Each compound has a latent phenotype: its mechanism's centre plus a compound-specific offset,
scaled by a dose response to its concentration. A fixed random two-layer network maps the
latent phenotype to ``n_features`` CellProfiler-like features (so deeper models have something
to learn), then come source gain, batch and plate shifts and replicate noise. Negative controls
(DMSO) have a zero phenotype and carry only the technical effects. Labelled MoAs give ``seen``
and ``novel`` compounds (stratified), compounds of unlabelled mechanisms are ``extra``.

Layout: every plate holds one replicate of every compound plus ``controls_per_plate`` DMSO
wells, so a compound has ``n_sources · batches_per_source · plates_per_batch`` replicates, each on
another plate — the replicate-plate design of JUMP. Deterministic from ``seed``.

Genetic perturbations (opt-in, ``n_genes > 0``; off by default so existing screens are byte for
byte unchanged): ``n_genes`` genes, each the target of the compounds of one labelled MoA (MoAs
spread over the list), get one ORF and one CRISPR well per plate (``perturbation_type`` ``orf`` /
``crispr``, the gene symbol in ``target``, no MoA). The CRISPR knockout phenocopies the gene's
inhibitors (``genetic_effect`` × the MoA's centre plus a gene-specific offset), the ORF
overexpression moves the opposite way (−``genetic_effect`` × the centre, its own offset), so the
``genetic`` evaluation task has signal against the controls and between the two. Genetic wells
are in group ``novel``: no objective ever trains on them (the evaluation is a transfer from
compounds, as in Pheno-CA).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bioscale.data import manifest as mf
from bioscale.data.groups import assign_groups
from bioscale.errors import ConfigError

CONTROL_ID = "JCP2022_033924"  # the JUMP identifier of DMSO
_ROWS = string.ascii_uppercase[:16]  # 384-well plate: A..P × 01..24


@dataclass(frozen=True, kw_only=True)
class SynthProfilesConfig:
    """Size and difficulty of a synthetic profile screen (defaults: the demo's dataset)."""

    seed: int = 0
    n_moa: int = 28
    compounds_per_moa: int = 6
    n_unlabelled_moa: int = 12
    n_extra: int = 192
    novel_fraction: float = 0.25
    n_sources: int = 2
    batches_per_source: int = 2
    plates_per_batch: int = 4
    controls_per_plate: int = 16
    n_features: int = 128
    latent_dim: int = 16
    compound_spread: float = 1.0
    replicate_noise: float = 1.5
    plate_effect: float = 1.0
    batch_effect: float = 1.0
    source_gain: float = 0.15
    #: genes with one ORF and one CRISPR well per plate (0: none; see the module docstring)
    n_genes: int = 0
    #: size of a genetic perturbation's phenotype, in units of its MoA's centre
    genetic_effect: float = 1.0

    def __post_init__(self) -> None:
        wells = (
            self.n_moa * self.compounds_per_moa
            + self.n_extra
            + self.controls_per_plate
            + 2 * self.n_genes
        )
        if wells > 384:
            raise ConfigError(f"{wells} wells per plate do not fit a 384-well plate")
        if self.n_moa < 2 or self.compounds_per_moa < 2:
            raise ConfigError("need at least 2 MoAs with at least 2 compounds each")
        if not 0 <= self.n_genes <= self.n_moa:
            raise ConfigError(f"n_genes must be in [0, n_moa={self.n_moa}], got {self.n_genes}")

    def as_dict(self) -> dict:
        """The config's fields, without the genetic ones while they are off (so screens made
        before genetic wells existed keep their fingerprint)."""
        out = asdict(self)
        if self.n_genes == 0:
            del out["n_genes"], out["genetic_effect"]
        return out

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _inchikey(rng: np.random.Generator) -> str:
    letters = np.array(list(string.ascii_uppercase))
    block = lambda n: "".join(rng.choice(letters, n))  # noqa: E731
    return f"{block(14)}-{block(8)}SA-N"


def _smiles(rng: np.random.Generator) -> str:
    """A small, valid SMILES (a substituted chain); synthetic, no real molecule intended."""
    chain = "".join(rng.choice(["C", "CC", "C(C)", "C(O)", "C(N)", "C(F)", "c1ccccc1"], 3))
    return f"{chain}C(=O)O"


def generate_profiles(cfg: SynthProfilesConfig, out_dir: str | Path) -> Path:
    """Write ``manifest.parquet`` and JUMP-style metadata into ``out_dir``; return the manifest path."""
    rng = np.random.default_rng(cfg.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    n_mech = cfg.n_moa + cfg.n_unlabelled_moa
    centres = rng.normal(size=(n_mech, cfg.latent_dim))
    # Compounds: labelled first (moa i), then extra from any mechanism (labels hidden).
    compounds = []
    for m in range(cfg.n_moa):
        for _ in range(cfg.compounds_per_moa):
            compounds.append(
                {
                    "mech": m,
                    "moa": f"moa_{m:02d}",
                    "target": f"TGT{m:02d}{chr(65 + int(rng.integers(0, 2)))}",
                }
            )
    for _ in range(cfg.n_extra):
        compounds.append({"mech": int(rng.integers(0, n_mech)), "moa": None, "target": None})
    for i, c in enumerate(compounds):
        c["id"] = f"JCP2022_{100000 + i:06d}"
        c["inchikey"] = _inchikey(rng)
        c["smiles"] = _smiles(rng)
        c["concentration"] = float(np.round(10 ** rng.uniform(-1, 1), 3))  # µM
        dose = 1.0 / (
            1.0 + np.exp(-2.0 * np.log10(c["concentration"] / 0.3))
        )  # Hill-like, EC50 0.3 µM
        c["z"] = (0.5 + dose) * (
            centres[c["mech"]] + cfg.compound_spread * rng.normal(size=cfg.latent_dim)
        )

    groups = assign_groups(
        {c["id"]: c["moa"] for c in compounds} | {CONTROL_ID: None},
        controls={CONTROL_ID},
        novel_fraction=cfg.novel_fraction,
    )
    genetic = _genetic_perturbations(cfg, compounds, centres)
    groups |= {g["id"]: "novel" for g in genetic}  # held out of every objective

    # Fixed "biology → features" map: latent (k) → hidden (4k, GELU-like) → features.
    w1 = rng.normal(size=(cfg.latent_dim, 4 * cfg.latent_dim)) / np.sqrt(cfg.latent_dim)
    w2 = rng.normal(size=(4 * cfg.latent_dim, cfg.n_features)) / np.sqrt(4 * cfg.latent_dim)

    def features_of(z: np.ndarray) -> np.ndarray:
        h = z @ w1
        return (h * (1.0 / (1.0 + np.exp(-1.702 * h)))) @ w2

    cols: dict[str, list] = {c: [] for c in mf.METADATA_COLUMNS}
    rows: list[np.ndarray] = []
    plates = []
    for s in range(cfg.n_sources):
        gain = 1.0 + cfg.source_gain * rng.normal(size=cfg.n_features)
        for b in range(cfg.batches_per_source):
            batch_shift = cfg.batch_effect * rng.normal(size=cfg.n_features)
            for p in range(cfg.plates_per_batch):
                plate_shift = cfg.plate_effect * rng.normal(size=cfg.n_features)
                plate = f"SYN{s}{b}{p:02d}"
                plates.append((f"source_{s + 1}", f"batch_{s + 1}_{b + 1}", plate))
                layout = [(c["id"], c) for c in compounds]
                layout += [(CONTROL_ID, None)] * cfg.controls_per_plate
                layout += [(g["id"], g) for g in genetic]
                order = rng.permutation(len(layout))
                for w, j in enumerate(order):
                    cid, c = layout[j]
                    well = f"{_ROWS[w // 24]}{w % 24 + 1:02d}"
                    z = np.zeros(cfg.latent_dim) if c is None else c["z"]
                    x = features_of(z) * gain + batch_shift + plate_shift
                    x = x + cfg.replicate_noise * rng.normal(size=cfg.n_features)
                    rows.append(x)
                    cols["sample_id"].append(f"{plate}_{well}")
                    cols["source"].append(f"source_{s + 1}")
                    cols["batch"].append(f"batch_{s + 1}_{b + 1}")
                    cols["plate"].append(plate)
                    cols["well"].append(well)
                    cols["site"].append(0)  # profiles are well-level
                    cols["perturbation_id"].append(cid)
                    kind = "control" if c is None else c.get("type", "compound")
                    cols["perturbation_type"].append(kind)
                    cols["inchikey"].append(None if c is None else c.get("inchikey"))
                    cols["smiles"].append(None if c is None else c.get("smiles"))
                    cols["concentration"].append(0.0 if c is None else c["concentration"])
                    cols["moa"].append(None if c is None else c["moa"])
                    cols["target"].append(None if c is None else c["target"])
                    cols["group"].append(groups[cid])

    path = mf.write_profiles(out / "manifest.parquet", cols, np.stack(rows).astype(np.float32))
    _write_jump_metadata(out / "metadata", plates, cols, compounds)
    (out / "synth_config.json").write_text(json.dumps(cfg.as_dict(), indent=2) + "\n")
    return path


def _genetic_perturbations(
    cfg: SynthProfilesConfig, compounds: list[dict], centres: np.ndarray
) -> list[dict]:
    """One ORF and one CRISPR perturbation per gene (module docstring); own random stream, so
    the compounds and their phenotypes do not depend on ``n_genes``."""
    if cfg.n_genes == 0:
        return []
    rng = np.random.default_rng([cfg.seed, 1])
    out = []
    for i in range(cfg.n_genes):
        mech = i * cfg.n_moa // cfg.n_genes  # MoAs spread over the labelled ones
        targets = sorted(c["target"] for c in compounds if c["mech"] == mech and c["target"])
        gene = max(set(targets), key=lambda t: (targets.count(t), t))  # the MoA's main target
        for j, (kind, sign) in enumerate((("orf", -1.0), ("crispr", 1.0))):
            offset = 0.5 * cfg.compound_spread * rng.normal(size=cfg.latent_dim)
            out.append(
                {
                    "id": f"JCP2022_{900000 + 2 * i + j:06d}",
                    "type": kind,
                    "moa": None,
                    "target": gene,
                    "concentration": 0.0,
                    "z": sign * cfg.genetic_effect * centres[mech] + offset,
                }
            )
    return out


def _write_csv_gz(path: Path, header: list[str], rows: list[list]) -> None:
    with gzip.open(path, "wt", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _write_jump_metadata(
    out: Path, plates: list[tuple[str, str, str]], cols: dict[str, list], compounds: list[dict]
) -> None:
    """plate.csv.gz, well.csv.gz, compound.csv.gz in the JUMP layout, plus hub-style annotations."""
    out.mkdir(parents=True, exist_ok=True)
    _write_csv_gz(
        out / "plate.csv.gz",
        ["Metadata_Source", "Metadata_Batch", "Metadata_Plate", "Metadata_PlateType"],
        [[s, b, p, "COMPOUND"] for s, b, p in plates],
    )
    _write_csv_gz(
        out / "well.csv.gz",
        ["Metadata_Source", "Metadata_Plate", "Metadata_Well", "Metadata_JCP2022"],
        [
            [s, p, w, c]
            for s, p, w, c in zip(
                cols["source"], cols["plate"], cols["well"], cols["perturbation_id"], strict=True
            )
        ],
    )
    _write_csv_gz(
        out / "compound.csv.gz",
        ["Metadata_JCP2022", "Metadata_InChIKey", "Metadata_InChI", "Metadata_SMILES"],
        [[c["id"], c["inchikey"], "", c["smiles"]] for c in compounds],
    )
    _write_csv_gz(
        out / "repurposing_annotations.csv.gz",
        ["InChIKey", "moa", "target"],
        [[c["inchikey"], c["moa"], c["target"]] for c in compounds if c["moa"]],
    )
