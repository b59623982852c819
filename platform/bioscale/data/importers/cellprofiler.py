"""CellProfiler image tables: LoadData CSVs and CytoTable/CellProfiler Parquet.

LoadData CSV columns (one row per site): ``FileName_Orig<Dye>`` with ``PathName_Orig<Dye>`` or
``URL_Orig<Dye>``, optional ``Frame_Orig<Dye>`` (page of a multi-page file),
``FileName_Illum<Dye>``/``PathName_Illum<Dye>``, ``Metadata_Plate``, ``Metadata_Well``,
``Metadata_Site`` and optionally ``Metadata_Source``/``Metadata_Batch``. The CytoTable Parquet
layout has the same names with an ``Image_`` prefix, one row per *cell* (deduplicated to sites
here) and no path columns: then ``--root`` is the image folder.

Dyes come from the column names (``OrigDNA`` → ``DNA``), never from the ``chN`` of file names,
whose channel numbers differ between microscopes and sources.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from bioscale.data.importers import ImportConfig, Site, SiteTable, order_dyes, register_sites
from bioscale.errors import ManifestError

_FILE = re.compile(r"^(?:FileName|URL)_Orig(?P<dye>.+)$")
_REQUIRED = ("Metadata_Plate", "Metadata_Well", "Metadata_Site")
_PREFIXES = ("FileName_", "PathName_", "URL_", "Frame_", "Metadata_")


def _is_uri(path: str) -> bool:
    return "://" in path


def _join(folder: str, name: str) -> str:
    if _is_uri(folder):
        return f"{folder.rstrip('/')}/{name}"
    return str(Path(folder) / name)


def _resolve(
    name: str | None, folder: str | None, root: str | None, *, what: str, where: str
) -> str:
    """A file name and its (optional) folder → an absolute path or a URI."""
    if not name:
        raise ManifestError(f"{where}: empty {what}")
    if _is_uri(name) or Path(name).is_absolute():
        return name
    if folder and (_is_uri(folder) or Path(folder).is_absolute()):
        return _join(folder, name)
    if root is None:
        raise ManifestError(
            f"{where}: {what} {name!r} is relative ({'PathName ' + repr(folder) if folder else 'no path column'}); "
            "pass --root with the folder it is relative to"
        )
    base = Path(root).resolve()
    return str(base / folder / name) if folder else str(base / name)


def _read_rows(path: Path) -> list[dict[str, str]]:
    """The table's rows as strings with any ``Image_`` prefix removed (feature columns dropped)."""
    if not path.exists():
        raise ManifestError(f"load data {path} does not exist")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        keep = [n for n in names if n.removeprefix("Image_").startswith(_PREFIXES)]
        table = pq.read_table(path, columns=keep)
        rows = table.to_pylist()
    else:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        out.append(
            {
                k.removeprefix("Image_"): ("" if v is None else str(v))
                for k, v in r.items()
                if k.removeprefix("Image_").startswith(_PREFIXES)
            }
        )
    return out


@register_sites("cellprofiler", kind="cellpainting")
def read_cellprofiler(cfg: ImportConfig) -> SiteTable:
    """Sites of a CellProfiler LoadData CSV or CytoTable/CellProfiler Parquet file."""
    path = Path(cfg.input)
    rows = _read_rows(path)
    if not rows:
        raise ManifestError(f"load data {path} has no rows")
    columns = list(rows[0])
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        raise ManifestError(
            f"load data {path} lacks {', '.join(missing)} (with or without an Image_ prefix); "
            f"it has {', '.join(columns[:12])}{' ...' if len(columns) > 12 else ''}"
        )
    dyes: list[str] = []
    for c in columns:
        m = _FILE.match(c)
        if m and m.group("dye") not in dyes:
            dyes.append(m.group("dye"))
    if not dyes:
        raise ManifestError(
            f"load data {path} has no FileName_Orig<Dye> or URL_Orig<Dye> column; "
            "bioscale maps dyes by these column names"
        )
    dyes = order_dyes(dyes)
    illum_root = cfg.illum_root or cfg.root
    sites: dict[tuple[str, str, int], Site] = {}
    for i, r in enumerate(rows):
        where = f"{path} row {i + 1}"
        try:
            site_no = int(float(r["Metadata_Site"]))
        except ValueError:
            raise ManifestError(
                f"{where}: Metadata_Site {r['Metadata_Site']!r} is not an integer"
            ) from None
        key = (r["Metadata_Plate"], r["Metadata_Well"], site_no)
        if key in sites:  # CytoTable: one row per cell; all cells of a site share its files
            continue
        paths, illum = {}, {}
        for d in dyes:
            url = r.get(f"URL_Orig{d}", "")
            if url:
                uri = (
                    url
                    if _is_uri(url) or Path(url).is_absolute()
                    else _resolve(url, None, cfg.root, what=f"URL_Orig{d}", where=where)
                )
            else:
                uri = _resolve(
                    r.get(f"FileName_Orig{d}"),
                    r.get(f"PathName_Orig{d}") or None,
                    cfg.root,
                    what=f"FileName_Orig{d}",
                    where=where,
                )
            frame = r.get(f"Frame_Orig{d}", "")
            paths[d] = f"{uri}#{int(float(frame))}" if frame else uri
            if r.get(f"FileName_Illum{d}"):
                illum[d] = _resolve(
                    r[f"FileName_Illum{d}"],
                    r.get(f"PathName_Illum{d}") or None,
                    illum_root,
                    what=f"FileName_Illum{d}",
                    where=where,
                )
        sites[key] = Site(
            plate=key[0],
            well=key[1],
            site=site_no,
            paths=paths,
            illum=illum,
            source=r.get("Metadata_Source") or None,
            batch=r.get("Metadata_Batch") or None,
        )
    return SiteTable(dyes=dyes, sites=list(sites.values()))
