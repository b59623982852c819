import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "bioscale.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=240,
    )


def test_import_and_help_do_not_import_heavy_stacks():
    code = (
        "import sys, bioscale, bioscale.cli; bioscale.cli.build_parser().format_help(); "
        "heavy = [m for m in ('torch', 'ray', 'mlflow') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
    help_out = run_cli("--help")
    assert help_out.returncode == 0 and "study" in help_out.stdout


def test_plan_prints_every_trial_and_the_total(tmp_path):
    out = run_cli("study", "plan", str(REPO / "jobs/studies/demo.yaml"), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if re.match(r"^\s*\d+\s+mlp:", line)]
    assert len(lines) == 16
    assert "total compute at most" in out.stdout and "FLOPs" in out.stdout
    assert not (tmp_path / "mlflow.db").exists()  # plan runs nothing


def test_typo_fails_with_exit_2_and_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "jobs/studies/demo.yaml").read_text().replace("seeds:", "seedz:"))
    out = run_cli("study", "plan", str(bad))
    assert out.returncode == 2
    assert "unknown key 'seedz' (did you mean 'seeds'?)" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_manifest_is_a_clear_error(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(
        "name: s\ndata: {manifest: nowhere/manifest.parquet}\n"
        "grids: [{rung: [debug], diet: [{}], objective: [ibp]}]\n"
    )
    out = run_cli("study", "plan", str(study))
    assert out.returncode == 2
    assert "manifest nowhere/manifest.parquet does not exist" in out.stderr


def test_synth_profiles_command(tmp_path):
    out = run_cli("data", "synth", "profiles", "--out", str(tmp_path), "--seed", "2")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "manifest.parquet").exists()
    assert (tmp_path / "metadata" / "compound.csv.gz").exists()


def test_the_tracker_is_built_in_one_place():
    """Every command and the study driver open their tracking store through ``open_tracker``, so
    each honours the study's ``tracking.retry_seconds``."""
    import ast

    library = REPO / "platform" / "bioscale"
    built = [
        f"{path.relative_to(library)}:{node.lineno}"
        for path in sorted(library.rglob("*.py"))
        if path != library / "study" / "tracking.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Tracker"
    ]
    assert built == []


def test_open_tracker_uses_the_study_s_store_and_retry_seconds(tmp_path, monkeypatch):
    from bioscale.study.spec import StudySpec
    from bioscale.study.tracking import default_uri, open_tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = StudySpec.from_dict(
        {
            "name": "s",
            "data": {"manifest": "m.parquet"},
            "grids": [{"rung": ["debug"], "diet": [{}], "objective": ["supervised"]}],
            "tracking": {"retry_seconds": 7.5},
        }
    )
    tracker = open_tracker(spec, tmp_path)
    assert tracker.uri == default_uri(tmp_path) and tracker.retry_seconds == 7.5
    assert tracker.artifact_root == (tmp_path / "mlartifacts").resolve()
    given = open_tracker(None, tmp_path, uri=f"sqlite:///{tmp_path / 'other.db'}")
    assert given.uri.endswith("other.db") and given.retry_seconds == 120.0


def test_the_console_script_and_python_m_run_the_same_main():
    from importlib.metadata import entry_points

    import bioscale.cli

    (script,) = entry_points(group="console_scripts", name="bioscale")
    assert script.load() is bioscale.cli.main
    out = run_cli("study", "--help")
    assert out.returncode == 0 and "usage: bioscale study" in out.stdout
