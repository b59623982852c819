"""Synthetic Cell Painting sites: five dyes rendered from a compound's phenotype, written as real
data is (Phenix-named LZW uint16 TIFFs, a CellProfiler LoadData CSV and JUMP-style metadata), then
imported through ``bioscale data import cellprofiler`` like any real dataset.

Biology, as in :mod:`bioscale.data.synth`: each compound has a latent phenotype (its MoA centre
plus a compound offset, scaled by a Hill-like dose response); negative controls (DMSO) have none.
A fixed random map turns the latent into morphology — nucleus size and elongation (DNA), cell
size and count, ER spread around the nucleus, mitochondrial puncta number and perinuclear
clustering (Mito), nucleoli number and brightness plus cytoplasmic RNA (RNA), actin fibre
frequency and cortex brightness (AGP) and each dye's intensity. Technical effects: per-batch and
per-plate channel gains and background, a per-plate illumination vignette, shot and read noise.

Channel numbers in file names follow the real site in ``../shared/data`` (ch5 = DNA, ch2 = ER,
ch6 = RNA, ch3 = AGP, ch4 = Mito), so importing proves dyes are mapped from column names.
Deterministic from ``seed``; each site draws from (seed, plate, well, site).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bioscale.data.importers import ImportConfig, import_dataset

# Reused from the profile generator: DMSO's JUMP id, plate rows, synthetic InChIKey/SMILES, CSV.
from bioscale.data.synth import _ROWS, CONTROL_ID, _inchikey, _smiles, _write_csv_gz
from bioscale.errors import ConfigError

DYES = ("DNA", "ER", "RNA", "AGP", "Mito")
PHENIX_CHANNEL = {"DNA": 5, "ER": 2, "RNA": 6, "AGP": 3, "Mito": 4}
_N_TRAITS = 12  # morphology parameters driven by the latent phenotype (see _traits)


@dataclass(frozen=True, kw_only=True)
class SynthImagesConfig:
    """Size of a synthetic image screen (defaults: fast tests and a CPU demo)."""

    seed: int = 0
    size: int = 128  # site height = width, pixels
    sites_per_well: int = 2
    n_moa: int = 4
    compounds_per_moa: int = 3
    n_unlabelled_moa: int = 2
    n_extra: int = 4
    novel_fraction: float = 0.34
    n_sources: int = 1
    batches_per_source: int = 2
    plates_per_batch: int = 1
    controls_per_plate: int = 4
    cells_per_site: float = 8.0  # mean, at the default cell radius; scales with site area
    cell_radius: float = 12.0  # pixels
    latent_dim: int = 8
    compound_spread: float = 0.5
    plate_effect: float = 0.08  # s.d. of log channel gain per plate
    batch_effect: float = 0.15  # s.d. of log channel gain per batch
    expert_maps: bool = True  # write, per site, a map of where the phenotype shows (path_map)

    def __post_init__(self) -> None:
        wells = self.n_moa * self.compounds_per_moa + self.n_extra + self.controls_per_plate
        if wells > 384:
            raise ConfigError(f"{wells} wells per plate do not fit a 384-well plate")
        if self.size < 4 * self.cell_radius:
            raise ConfigError(
                f"size {self.size} px is too small for cells of radius {self.cell_radius:g} px: "
                f"use a size of at least {math.ceil(4 * self.cell_radius)} px (--size)"
            )


@dataclass(frozen=True, kw_only=True)
class SynthImagesResult:
    manifest: Path
    load_data: Path
    metadata: Path
    images: Path
    n_sites: int
    n_files: int


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _traits(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Latent phenotype (k,) → morphology traits (_N_TRAITS,) in (-1, 1); 0 for controls."""
    return np.tanh(z @ w)


def render_site(
    traits: np.ndarray,
    *,
    size: int,
    n_cells_mean: float,
    cell_radius: float,
    gains: np.ndarray,
    background: np.ndarray,
    rng: np.random.Generator,
    with_map: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One site: (5, size, size) uint16 in ``DYES`` order (and, ``with_map``, its expert map).

    The expert map (an "expert attention" prior) marks where the compound's phenotype shows: each
    dye's noiseless signal weighted by how strongly the compound's traits move that dye's
    intensity, summed and blurred — (size, size) float32 in [0, 1]; all zeros for controls.

    Args:
        traits: (_N_TRAITS,) in (-1, 1), from :func:`_traits`.
        gains: (5,) plate × batch channel gains; background: (5,) counts.
    """
    from scipy.ndimage import gaussian_filter

    t = traits
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dna = np.zeros((h, w), np.float32)
    er = np.zeros_like(dna)
    agp = np.zeros_like(dna)
    cyto_rna = np.zeros_like(dna)
    mito_pts = np.zeros_like(dna)
    rna_pts = np.zeros_like(dna)
    n_cells = max(1, rng.poisson(n_cells_mean * (1.0 + 0.4 * t[0])))
    rc_mean = cell_radius * (1.0 + 0.25 * t[1])
    centres: list[tuple[float, float]] = []
    for _ in range(n_cells * 8):  # rejection sampling: cells overlap little
        if len(centres) == n_cells:
            break
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if all((cy - a) ** 2 + (cx - b) ** 2 > (1.4 * rc_mean) ** 2 for a, b in centres):
            centres.append((cy, cx))
    for cy, cx in centres:
        rc = rc_mean * rng.uniform(0.85, 1.15)
        rn = rc * (0.42 + 0.1 * t[2]) * rng.uniform(0.9, 1.1)
        ecc = 0.08 + 0.12 * (t[3] + 1.0)  # nucleus elongation (axis ratio (1+ecc)²)
        theta = rng.uniform(0, np.pi)
        r = int(np.ceil(1.5 * rc))
        y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 1)
        x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 1)
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        dn = np.sqrt((u / (rn * (1 + ecc))) ** 2 + (v / (rn / (1 + ecc))) ** 2)
        ang = np.arctan2(dy, dx)
        phase = rng.uniform(0, 2 * np.pi, 3)
        edge = rc * (1 + 0.12 * np.sin(3 * ang + phase[0]) + 0.08 * np.sin(5 * ang + phase[1]))
        dist = np.sqrt(dy**2 + dx**2)
        nucleus = _sigmoid((1.0 - dn) * 8.0)
        cell = _sigmoid((edge - dist) * 1.5)
        cyto = np.clip(cell - nucleus, 0, 1)
        chromatin = 1.0 + 0.25 * rng.standard_normal(nucleus.shape).astype(np.float32)
        dna[y0:y1, x0:x1] += nucleus * chromatin * (1.0 + 0.35 * t[4])
        spread = rc * (0.25 + 0.15 * (t[5] + 1.0))  # ER: perinuclear, decaying outward
        er[y0:y1, x0:x1] += cyto * np.exp(-np.maximum(dist - rn, 0) / spread) * (1.0 + 0.35 * t[6])
        freq = (0.15 + 0.08 * t[7]) / max(1.0, cell_radius / 12.0)  # AGP: fibres + cortex
        fibres = 0.5 + 0.5 * np.sin(2 * np.pi * freq * u + phase[2])
        cortex = np.exp(-((dist - edge) ** 2) / (2 * (0.08 * rc) ** 2))
        agp[y0:y1, x0:x1] += (cyto * fibres * 0.6 + cortex * (0.8 + 0.4 * t[8])) * cell
        cyto_rna[y0:y1, x0:x1] += cyto * 0.25
        # Mito puncta: count and perinuclear clustering from traits.
        n_mito = max(3, int(rng.poisson(25 * (1.0 + 0.5 * t[9]) * (rc / 12.0) ** 2)))
        rad = rn + (rc - rn) * rng.beta(1.0 + 1.5 * (1 - t[10]), 2.0, n_mito)
        a = rng.uniform(0, 2 * np.pi, n_mito)
        _deposit(mito_pts, cy + rad * np.sin(a), cx + rad * np.cos(a), 1.0)
        # Nucleoli: 1–5 bright spots in the nucleus.
        n_nuc = int(np.clip(round(3 + 2 * t[11] + rng.normal(0, 0.7)), 1, 5))
        rad = rn * 0.55 * np.sqrt(rng.uniform(0, 1, n_nuc))
        a = rng.uniform(0, 2 * np.pi, n_nuc)
        _deposit(rna_pts, cy + rad * np.sin(a), cx + rad * np.cos(a), 1.0 + 0.4 * t[11])
    scale = cell_radius / 12.0
    mito = gaussian_filter(mito_pts, 1.0 * scale) * (2 * np.pi * scale**2) * (1.0 + 0.3 * t[9])
    rna = gaussian_filter(rna_pts, 1.5 * scale) * (2 * np.pi * (1.5 * scale) ** 2) + cyto_rna
    signal = np.maximum(np.stack([dna, er, rna, agp, mito]), 0.0)  # (5, H, W), ~[0, 2]
    peak = np.array([9000.0, 5000.0, 6000.0, 3000.0, 7000.0], np.float32)[:, None, None]
    vignette = 1.0 - 0.25 * (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (h * h / 2))
    counts = background[:, None, None] + gains[:, None, None] * peak * signal * vignette
    noisy = counts + rng.standard_normal(counts.shape).astype(np.float32) * np.sqrt(counts + 25.0)
    img = np.clip(np.rint(noisy), 0, 65535).astype(np.uint16)
    if not with_map:
        return img
    # per-dye intensity change the traits cause (the factors applied above), |Δ| per channel
    effect = np.abs(
        np.array([0.35 * t[4], 0.35 * t[6], 0.4 * t[11], 0.4 * t[8], 0.3 * t[9]], dtype=np.float32)
    )
    where = gaussian_filter(np.tensordot(effect, signal, axes=1), 2.0 * scale)
    peak_val = float(where.max())
    return img, (where / peak_val if peak_val > 1e-6 else np.zeros_like(where)).astype(np.float32)


def _deposit(canvas: np.ndarray, ys: np.ndarray, xs: np.ndarray, weight: float) -> None:
    """Add point masses (later blurred into spots), dropping those outside the canvas."""
    iy, ix = np.rint(ys).astype(int), np.rint(xs).astype(int)
    ok = (iy >= 0) & (iy < canvas.shape[0]) & (ix >= 0) & (ix < canvas.shape[1])
    np.add.at(canvas, (iy[ok], ix[ok]), weight)


def phenix_name(well: str, site: int, channel: int) -> str:
    """Opera Phenix export name, e.g. ``r03c03f03p01-ch5sk1fk1fl1.tiff`` for C03 site 3."""
    row = ord(well[0]) - ord("A") + 1
    return f"r{row:02d}c{int(well[1:]):02d}f{site:02d}p01-ch{channel}sk1fk1fl1.tiff"


def generate_images(cfg: SynthImagesConfig, out_dir: str | Path) -> SynthImagesResult:
    """Render the screen into ``out_dir`` and import it; see the module docstring."""
    import tifffile

    rng = np.random.default_rng(cfg.seed)
    out = Path(out_dir)
    images = out / "images"
    meta_dir = out / "metadata"
    n_mech = cfg.n_moa + cfg.n_unlabelled_moa
    centres = rng.normal(size=(n_mech, cfg.latent_dim))
    w_traits = rng.normal(size=(cfg.latent_dim, _N_TRAITS)) / np.sqrt(cfg.latent_dim)
    compounds = []
    for m in range(cfg.n_moa):
        for _ in range(cfg.compounds_per_moa):
            compounds.append({"mech": m, "moa": f"moa_{m:02d}", "target": f"TGT{m:02d}"})
    for _ in range(cfg.n_extra):  # unlabelled: any mechanism, no annotation row
        compounds.append({"mech": int(rng.integers(0, n_mech)), "moa": None, "target": None})
    for i, c in enumerate(compounds):
        c["id"] = f"JCP2022_{200000 + i:06d}"
        c["inchikey"] = _inchikey(rng)
        c["smiles"] = _smiles(rng)
        c["concentration"] = float(np.round(10 ** rng.uniform(-1, 1), 3))  # µM
        dose = 1.0 / (1.0 + np.exp(-2.0 * np.log10(c["concentration"] / 0.3)))  # EC50 0.3 µM
        z = (0.5 + dose) * (
            centres[c["mech"]] + cfg.compound_spread * rng.normal(size=cfg.latent_dim)
        )
        c["traits"] = _traits(z, w_traits)

    dye_of_col = {d: f"Orig{d}" for d in DYES}
    expert_maps: dict[tuple[str, str, int], str] = {}
    load_rows, plates, wells = [], [], []
    n_files = 0
    cells_mean = cfg.cells_per_site * (cfg.size / 128.0) ** 2 * (12.0 / cfg.cell_radius) ** 2
    for s in range(cfg.n_sources):
        source = f"source_{s + 1}"
        for b in range(cfg.batches_per_source):
            batch = f"batch_{s + 1}_{b + 1}"
            batch_gain = np.exp(cfg.batch_effect * rng.normal(size=5))
            for p in range(cfg.plates_per_batch):
                plate = f"SYNIMG{s}{b}{p:02d}"
                plates.append((source, batch, plate))
                gains = (batch_gain * np.exp(cfg.plate_effect * rng.normal(size=5))).astype(
                    np.float32
                )
                background = rng.uniform(120, 400, 5).astype(np.float32)
                layout = [(c["id"], c) for c in compounds] + [
                    (CONTROL_ID, None)
                ] * cfg.controls_per_plate
                folder = images / plate
                folder.mkdir(parents=True, exist_ok=True)
                for w_idx, j in enumerate(rng.permutation(len(layout))):
                    cid, c = layout[j]
                    well = f"{_ROWS[w_idx // 24]}{w_idx % 24 + 1:02d}"
                    wells.append(
                        (source, plate, well, cid, 0.0 if c is None else c["concentration"])
                    )
                    traits = np.zeros(_N_TRAITS) if c is None else c["traits"]
                    for site in range(1, cfg.sites_per_well + 1):
                        site_rng = np.random.default_rng([cfg.seed, s, b, p, w_idx, site])
                        img, expert = render_site(
                            traits,
                            size=cfg.size,
                            n_cells_mean=cells_mean,
                            cell_radius=cfg.cell_radius,
                            gains=gains,
                            background=background,
                            rng=site_rng,
                            with_map=True,
                        )
                        if cfg.expert_maps:
                            map_name = phenix_name(well, site, 0).replace("-ch0", "-map")
                            tifffile.imwrite(
                                folder / map_name,
                                np.rint(expert * 65535).astype(np.uint16),
                                compression="lzw",
                            )
                            expert_maps[(plate, well, site)] = str((folder / map_name).resolve())
                        row = {
                            "Metadata_Plate": plate,
                            "Metadata_Well": well,
                            "Metadata_Site": site,
                        }
                        for k, dye in enumerate(DYES):
                            name = phenix_name(well, site, PHENIX_CHANNEL[dye])
                            tifffile.imwrite(folder / name, img[k], compression="lzw")
                            row[f"FileName_{dye_of_col[dye]}"] = name
                            row[f"PathName_{dye_of_col[dye]}"] = f"images/{plate}"
                            n_files += 1
                        load_rows.append(row)

    load_data = out / "load_data.csv"
    with open(load_data, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(load_rows[0]))
        writer.writeheader()
        writer.writerows(load_rows)
    _write_metadata(meta_dir, plates, wells, compounds)
    (out / "synth_images_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    summary = import_dataset(
        "cellprofiler",
        ImportConfig(
            input=str(load_data),
            root=str(out),
            out=str(out / "manifest.parquet"),
            metadata=str(meta_dir),
            novel_fraction=cfg.novel_fraction,
        ),
    )
    if cfg.expert_maps:
        _attach_maps(summary.path, expert_maps)
    return SynthImagesResult(
        manifest=summary.path,
        load_data=load_data,
        metadata=meta_dir,
        images=images,
        n_sites=len(load_rows),
        n_files=n_files,
    )


def _attach_maps(manifest: Path, maps: dict[tuple[str, str, int], str]) -> None:
    """Add the ``path_map`` column (expert maps) to the imported manifest, keeping its metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(manifest)
    keys = zip(
        table.column("plate").to_pylist(),
        table.column("well").to_pylist(),
        table.column("site").to_pylist(),
        strict=True,
    )
    column = pa.array([maps.get((p, w, int(s))) for p, w, s in keys], pa.string())
    table = table.append_column("path_map", column).replace_schema_metadata(table.schema.metadata)
    tmp = Path(manifest).with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, row_group_size=256)
    tmp.replace(manifest)


def _write_metadata(
    out: Path, plates: list[tuple], wells: list[tuple], compounds: list[dict]
) -> None:
    """JUMP layout (plate/well/compound.csv.gz, perturbation_control.csv) plus hub annotations."""
    out.mkdir(parents=True, exist_ok=True)
    _write_csv_gz(
        out / "plate.csv.gz",
        ["Metadata_Source", "Metadata_Batch", "Metadata_Plate", "Metadata_PlateType"],
        [[s, b, p, "COMPOUND"] for s, b, p in plates],
    )
    _write_csv_gz(
        out / "well.csv.gz",
        [
            "Metadata_Source",
            "Metadata_Plate",
            "Metadata_Well",
            "Metadata_JCP2022",
            "Metadata_Concentration",
        ],
        [list(w) for w in wells],
    )
    _write_csv_gz(
        out / "compound.csv.gz",
        ["Metadata_JCP2022", "Metadata_InChIKey", "Metadata_InChI", "Metadata_SMILES"],
        [[c["id"], c["inchikey"], "", c["smiles"]] for c in compounds]
        + [[CONTROL_ID, "IAZDPXIOMUYVGZ-UHFFFAOYSA-N", "", "CS(C)=O"]],
    )
    with open(out / "perturbation_control.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(
            [
                ["Metadata_JCP2022", "Metadata_pert_type", "Metadata_Name", "Metadata_modality"],
                [CONTROL_ID, "negcon", "DMSO", "compound"],
            ]
        )
    _write_csv_gz(
        out / "repurposing_annotations.csv.gz",
        ["InChIKey", "moa", "target"],
        [[c["inchikey"], c["moa"], c["target"]] for c in compounds if c["moa"]],
    )
