"""JUMP Cell Painting metadata and Drug Repurposing Hub annotations, joined onto sites.

Files are found anywhere under the metadata folder, by name:

- ``plate.csv(.gz)``: Metadata_Source, Metadata_Batch, Metadata_Plate, Metadata_PlateType
- ``well.csv(.gz)``: Metadata_Source, Metadata_Plate, Metadata_Well, Metadata_JCP2022
  (an optional Metadata_Concentration in µM is used when present)
- ``compound.csv(.gz)``: Metadata_JCP2022, Metadata_InChIKey, Metadata_InChI, Metadata_SMILES
- ``perturbation_control.csv`` (negcon → ``control``), ``orf.csv(.gz)``, ``crispr.csv(.gz)``
- ``<name>_compound_platemap.tsv`` + ``<name>_compound_metadata.tsv`` (JUMP-Target-N, JUMP-MOA):
  for plates of type ``TARGETN`` the platemap names each well's compound (``broad_sample``) with
  InChIKey, SMILES and targets; through well.csv this also resolves those JCP2022 ids when no
  compound.csv is at hand.
- annotations by InChIKey: ``compound_rephub_annot.csv.gz`` (Metadata_moa, Metadata_target),
  ``repurposing_annotations.csv(.gz)`` (InChIKey, moa, target), and the ``moa`` column of
  JUMP-MOA's compound metadata.
"""

from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path

from bioscale.errors import ManifestError

_ANNOTATION_FILES = ("compound_rephub_annot", "repurposing_annotations")
_PLATEMAP = re.compile(r"^(?P<name>.+)_compound_platemap\.tsv$")


def _find(root: Path, stem: str) -> Path | None:
    for suffix in (".csv.gz", ".csv"):
        hits = sorted(root.rglob(f"{stem}{suffix}"))
        if hits:
            return hits[0]
    return None


def _read(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    """Rows of a (gzipped) CSV/TSV, every value a string (plate names can look like numbers)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


def _read_wells(path: Path, plates: set[str]) -> list[dict[str, str]]:
    """The well table's rows on ``plates`` (pyarrow: the real table has ~10⁶ rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        header = next(csv.reader(fh))
    table = pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()))
    )
    keep = pc.is_in(table.column("Metadata_Plate"), value_set=pa.array(sorted(plates), pa.string()))
    return table.filter(keep).to_pylist()


#: CRISPR/ORF "symbols" that name no gene (JUMP's crispr.csv controls).
_NO_GENE = {"no-guide", "non-targeting", "BFP", "HcRed", "LacZ", "LUCIFERASE", "eGFP"}


def _strip(row: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("Metadata_"): v for k, v in row.items()}


def _clean(value: str | None) -> str | None:
    return None if value in (None, "", "NA", "nan", "NaN") else value


def _plate_type(platemap_name: str) -> str | None:
    """``JUMP-Target-2`` → ``TARGET2`` (the Metadata_PlateType its plates carry)."""
    m = re.fullmatch(r"JUMP-Target-(\d+)", platemap_name)
    return f"TARGET{m.group(1)}" if m else None


class JumpMetadata:
    """Lookup tables built from a JUMP-style metadata folder, restricted to the plates imaged."""

    def __init__(self) -> None:
        self.plates: dict[str, dict[str, str]] = {}
        self.wells: dict[tuple[str, str], dict[str, str]] = {}
        self.compounds: dict[str, dict[str, str | None]] = {}
        self.annotations: dict[str, dict[str, str | None]] = {}
        self.controls: set[str] = set()
        self.kinds: dict[str, str] = {}  # JCP2022 → orf | crispr
        self.genes: dict[str, str] = {}  # JCP2022 → the gene an ORF or CRISPR guide perturbs
        self.platemaps: dict[str, dict[str, dict[str, str | None]]] = {}  # type → well → compound

    @classmethod
    def load(cls, folder: str | Path, plates: set[str]) -> JumpMetadata:
        """Read what ``folder`` holds; ``plates`` limits the well table to the imaged plates."""
        root = Path(folder)
        if not root.is_dir():
            raise ManifestError(f"metadata folder {root} does not exist")
        meta = cls()
        if p := _find(root, "plate"):
            for r in map(_strip, _read(p)):
                meta.plates[r["Plate"]] = {
                    "source": r.get("Source"),
                    "batch": r.get("Batch"),
                    "type": r.get("PlateType"),
                }
        meta._load_platemaps(root)
        target_plates = {p for p, info in meta.plates.items() if info.get("type") in meta.platemaps}
        if p := _find(root, "well"):
            for r in map(_strip, _read_wells(p, plates | target_plates)):
                meta.wells[(r["Plate"], r["Well"])] = r
        if p := _find(root, "compound"):
            for r in map(_strip, _read(p)):
                meta.compounds[r["JCP2022"]] = {
                    "inchikey": _clean(r.get("InChIKey")),
                    "smiles": _clean(r.get("SMILES")),
                }
        meta._resolve_platemap_compounds()
        if p := _find(root, "perturbation_control"):
            meta.controls = {
                r["JCP2022"] for r in map(_strip, _read(p)) if r.get("pert_type") == "negcon"
            }
        for kind in ("orf", "crispr"):
            if p := _find(root, kind):
                for r in map(_strip, _read(p)):
                    meta.kinds[r["JCP2022"]] = kind
                    symbol = _clean(r.get("Symbol"))
                    if symbol and symbol not in _NO_GENE:
                        meta.genes[r["JCP2022"]] = symbol
        meta._load_annotations(root)
        if not (meta.plates or meta.wells):
            raise ManifestError(
                f"metadata folder {root} has neither plate.csv(.gz) nor well.csv(.gz)"
            )
        return meta

    def _load_platemaps(self, root: Path) -> None:
        for pm in sorted(root.rglob("*_compound_platemap.tsv")):
            name = _PLATEMAP.match(pm.name).group("name")
            md = pm.with_name(f"{name}_compound_metadata.tsv")
            if not md.exists():
                continue
            compounds = {r["broad_sample"]: r for r in _read(md, "\t")}
            for r in compounds.values():  # JUMP-MOA carries MoA labels by InChIKey
                if _clean(r.get("moa")) and _clean(r.get("InChIKey")):
                    self.annotations.setdefault(r["InChIKey"], {"moa": r["moa"], "target": None})
            plate_type = _plate_type(name)
            if plate_type is None:
                continue
            layout: dict[str, dict[str, str | None]] = {}
            for r in _read(pm, "\t"):
                c = compounds.get(r["broad_sample"], {})
                layout[r["well_position"]] = {
                    "broad_sample": _clean(r["broad_sample"]),
                    "inchikey": _clean(c.get("InChIKey")),
                    "smiles": _clean(c.get("smiles")),
                    "name": _clean(c.get("pert_iname")),
                    "target": _clean(c.get("target_list")),
                    "control_type": _clean(c.get("control_type")),
                }
            self.platemaps[plate_type] = layout

    def _resolve_platemap_compounds(self) -> None:
        """JCP2022 → compound through well.csv × plate.csv[TARGETn] × the platemap (when the
        JCP2022 id is not in compound.csv)."""
        for (plate, well), r in self.wells.items():
            ptype = self.plates.get(plate, {}).get("type")
            layout = self.platemaps.get(ptype or "")
            jcp = r.get("JCP2022")
            if not layout or not jcp or well not in layout or jcp in self.compounds:
                continue
            self.compounds[jcp] = dict(layout[well])

    def _load_annotations(self, root: Path) -> None:
        for stem in _ANNOTATION_FILES:
            if p := _find(root, stem):
                for r in map(_strip, _read(p)):
                    key = _clean(r.get("InChIKey"))
                    if key:
                        self.annotations[key] = {
                            "moa": _clean(r.get("moa")),
                            "target": _clean(r.get("target")),
                        }

    def plate(self, plate: str) -> dict[str, str]:
        return self.plates.get(plate, {})

    def lookup(self, plate: str, well: str) -> dict[str, object]:
        """The perturbation of one well (empty dict when the metadata does not know it)."""
        r = self.wells.get((plate, well))
        ptype = self.plate(plate).get("type")
        on_map = self.platemaps.get(ptype or "", {}).get(well)
        if r is None and on_map is None:
            return {}
        jcp = _clean(r.get("JCP2022")) if r else None
        compound = dict(self.compounds.get(jcp, {})) if jcp else {}
        if not compound and on_map:
            compound = dict(on_map)
        pid = jcp or compound.get("broad_sample")
        if pid is None:
            return {}
        inchikey = compound.get("inchikey")
        note = self.annotations.get(inchikey or "", {})
        if pid in self.controls or compound.get("control_type") == "negcon":
            kind = "control"
        else:
            kind = self.kinds.get(pid, "compound")
        conc = _clean(r.get("Concentration")) if r else None
        return {
            "source": r.get("Source") if r else None,
            "perturbation_id": pid,
            "perturbation_type": kind,
            "inchikey": inchikey,
            "smiles": compound.get("smiles"),
            "moa": note.get("moa"),
            # an ORF or CRISPR guide's target is its gene (the genetic evaluation pairs them)
            "target": note.get("target") or compound.get("target") or self.genes.get(pid),
            "concentration": float(conc) if conc else None,
        }
