"""``benchmarks/import_profiles.py`` runs end to end at a tiny size and reports every field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]


def test_import_benchmark_reports_import_and_baseline_of_the_generated_tables(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "import_profiles.py"),
            "--wells",
            "2000",
            "--features",
            "50",
            "--dir",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert (r["wells"], r["features"], r["format"]) == (2000, 50, "parquet")
    assert r["tables"] == 6  # 384 wells a plate: 5 full plates and one of 80
    for key in ("import_s", "baseline_s", "import_cpu_s", "baseline_cpu_s"):
        assert r[key] > 0, key
    assert r["wells_per_s"] == pytest.approx(2000 / r["import_s"])
    assert r["ratio"] == pytest.approx(r["import_s"] / r["baseline_s"])
    # a Python process with pyarrow loaded holds tens of MiB; a tiny import stays far under 2 GiB
    assert 0.02 < r["baseline_rss_gib"] < 2 and 0.02 < r["import_rss_gib"] < 2
    assert r["rss_goal_met"] is True
    # 2,000 × 50 float32 features are 0.4 MB in the manifest, besides its metadata
    assert 0.4e6 < r["manifest_gib"] * 2**30 < 4e6
    assert list(tmp_path.iterdir()) == []  # the generated tables are deleted
