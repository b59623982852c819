"""Trial runs as a tidy table: one row per FINISHED trial, params typed, final metric values."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from bioscale.names import KIND

_INT_PARAMS = (
    "N",
    "N_heads",
    "D_samples",
    "D_compounds",
    "seed",
    "diet_seed",
    "epochs",
    "batch_size",
)
_FLOAT_PARAMS = ("lr", "flops_per_sample")


def runs_table(client: Any, experiment_id: str) -> list[dict[str, Any]]:
    """Rows ``{param..., metric..., run_id}`` of the experiment's FINISHED trial runs."""
    query = f"tags.`{KIND}` = 'trial' and attributes.status = 'FINISHED'"
    rows, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=query, max_results=1000, page_token=token
        )
        for run in page:
            row: dict[str, Any] = dict(run.data.params)
            for k in _INT_PARAMS:
                if k in row:
                    row[k] = int(row[k])
            for k in _FLOAT_PARAMS:
                if k in row:
                    row[k] = float(row[k])
            row.update(run.data.metrics)
            row["run_id"] = run.info.run_id
            rows.append(row)
        token = page.token
        if not token:
            break
    rows.sort(
        key=lambda r: (
            r.get("objective", ""),
            r.get("N", 0),
            r.get("D_samples", 0),
            r.get("seed", 0),
        )
    )
    return rows


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
