"""Bad input is refused before any compute with a clear message: one table, one row per case.

Each case is a command line (run in-process through ``bioscale.cli.main``), the exit code it must
end with and words its message must contain; none may end in a traceback. Cases that already gave
clear errors are kept here so they stay that way. The scaling commands' cases are in
``test_scaling_cli.py``; faults during a run (a second driver, Ctrl-C, a crash) are in
``test_cluster.py``.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from bioscale.cli import main

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]


def _study(tmp: Path, manifest: Path, **overrides) -> str:
    """A one-trial study YAML on ``manifest``; ``a__b=v`` sets the nested key ``a.b``."""
    study = {
        "name": "bad-input",
        "data": {"manifest": str(manifest)},
        "grids": [{"rung": ["debug"], "diet": [{"replicates": 1.0}], "objective": ["supervised"]}],
        "train": {"budget": {"epochs": 2}, "batch_size": 64},
    }
    for key, value in overrides.items():
        *path, last = key.split("__")
        node = study
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    path = tmp / f"study-{len(list(tmp.glob('study-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(study))
    return str(path)


def _with_features(table: pa.Table, features: np.ndarray) -> pa.Table:
    col = table.schema.get_field_index("features")
    arr = pa.FixedSizeListArray.from_arrays(pa.array(features.ravel()), features.shape[1])
    return table.set_column(col, table.schema.field(col), arr)


@pytest.fixture(scope="module")
def bad(tmp_path_factory, synth_manifest):
    """Broken copies of the shared synthetic screen, and other bad files, in one folder."""
    root = tmp_path_factory.mktemp("bad")
    table = pq.read_table(synth_manifest)
    meta = table.schema.metadata
    ids = table.column("sample_id").to_pylist()
    dup = table.set_column(0, "sample_id", pa.array([ids[1], *ids[1:]]))
    pq.write_table(dup.replace_schema_metadata(meta), root / "duplicate-ids.parquet")
    feats = np.stack(table.column("features").to_numpy(zero_copy_only=False)).astype(np.float32)
    feats[3, 5] = np.nan
    feats[7, 0] = np.inf
    nonfinite = _with_features(table, feats)
    pq.write_table(nonfinite.replace_schema_metadata(meta), root / "nan.parquet")
    rows = [list(f) for f in feats]
    rows[4] = rows[4][:-1]
    ragged = table.set_column(
        table.schema.get_field_index("features"),
        pa.field("features", pa.list_(pa.float32())),
        pa.array(rows, type=pa.list_(pa.float32())),
    )
    pq.write_table(ragged.replace_schema_metadata(meta), root / "ragged.parquet")
    pq.write_table(table.slice(0, 0), root / "empty.parquet")
    (root / "folder").mkdir()
    (root / "a-file").write_text("not a folder")
    (root / "load_data.csv").write_text("FileName_OrigDNA,PathName_OrigDNA\n")
    (root / "fix-not-json.json").write_text("{not json")
    (root / "fix-list.json").write_text(json.dumps([[1, 2]]))
    (root / "fix-short.json").write_text(json.dumps({"a/1.png": [[3]]}))
    from bioscale.data.synth_images import SynthImagesConfig, generate_images

    images = generate_images(
        SynthImagesConfig(
            seed=3,
            n_moa=2,
            compounds_per_moa=2,
            n_extra=1,
            controls_per_plate=2,
            size=32,
            cell_radius=4.0,
            expert_maps=False,
        ),
        root / "images",
    ).manifest
    sites = pq.read_table(images)
    keep = [
        not (g == "control" and p == "SYNIMG0100")
        for g, p in zip(
            sites.column("group").to_pylist(), sites.column("plate").to_pylist(), strict=True
        )
    ]
    pq.write_table(sites.filter(pa.array(keep)), root / "plate-without-controls.parquet")
    return {"root": root, "manifest": synth_manifest, "images": images}


def _fixations(b: dict, name: str, images: bool = True) -> list[str]:
    argv = ["data", "import", "natural", "fixations", str(b["root"] / name)]
    argv += ["--out", str(b["root"] / "fx")]
    return argv + (["--images", str(b["root"] / "folder")] if images else [])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _image_study(b: dict, manifest: Path, kind: str = "cellpainting", **image) -> list[str]:
    data = {"kind": kind, "manifest": str(manifest), "image": {"crop": 16, **image}}
    return ["study", "plan", _study(b["root"], manifest, data=data)]


# (id, argv builder, exit code, words the message contains)
CASES = [
    (
        "plate-controls-on-a-plate-without-controls",
        lambda b: _image_study(
            b, b["root"] / "plate-without-controls.parquet", normalise="plate_controls"
        ),
        2,
        ["plate_controls", "SYNIMG0100", "have none", "normalise: percentile"],
    ),
    (
        "illumination-without-functions",
        lambda b: _image_study(b, b["images"], illumination=True),
        2,
        ["data.image.illumination", "illum_<Dye>", "DNA", "illumination: false"],
    ),
    (
        "natural-image-with-cellpainting-settings",
        lambda b: _image_study(b, b["images"], kind="natural", normalise="none"),
        2,
        ["data.image.normalise does not apply", "'natural'", "reads crop"],
    ),
    (
        "pack-unknown-dye",
        lambda b: [
            "data",
            "pack",
            str(b["images"]),
            "--out",
            str(b["root"] / "p"),
            "--dyes",
            "DNA,Golgi",
        ],
        2,
        ["Golgi", "not in manifest", "it has DNA"],
    ),
    (
        "epochs-0",
        lambda b: ["study", "plan", _study(b["root"], b["manifest"], train__budget={"epochs": 0})],
        2,
        ["train.budget.epochs must be >= 1", "untrained"],
    ),
    (
        "epochs-negative",
        lambda b: ["study", "plan", _study(b["root"], b["manifest"], train__budget={"epochs": -1})],
        2,
        ["train.budget.epochs must be >= 1"],
    ),
    (
        "samples-negative",
        lambda b: [
            "study",
            "plan",
            _study(b["root"], b["manifest"], train__budget={"samples": -100}),
        ],
        2,
        ["train.budget.samples must be > 0"],
    ),
    (
        "lr-nan",
        lambda b: [
            "study",
            "plan",
            _study(b["root"], b["manifest"], train__lr={"value": float("nan")}),
        ],
        2,
        ["train.lr.value", "finite number"],
    ),
    (
        "lr-inf-string",
        lambda b: ["study", "plan", _study(b["root"], b["manifest"], train__lr={"value": "inf"})],
        2,
        ["train.lr.value", "finite number"],
    ),
    (
        "weight-decay-negative",
        lambda b: ["study", "plan", _study(b["root"], b["manifest"], train__weight_decay=-0.1)],
        2,
        ["train.weight_decay must be >= 0"],
    ),
    (
        "patience-negative",
        lambda b: [
            "study",
            "plan",
            _study(b["root"], b["manifest"], train__early_stopping={"patience": -1}),
        ],
        2,
        ["train.early_stopping.patience must be >= 0"],
    ),
    (
        "quote-in-name",
        lambda b: ["study", "plan", _study(b["root"], b["manifest"], name="it's-mine")],
        2,
        ["name:", "not a study name", "quotes"],
    ),
    (
        "typo-key",
        lambda b: ["study", "plan", _study(b["root"], b["manifest"], train__epoch=3)],
        2,
        ["unknown key 'epoch'"],
    ),
    (
        "manifest-missing",
        lambda b: ["study", "plan", _study(b["root"], b["root"] / "nowhere.parquet")],
        2,
        ["nowhere.parquet does not exist"],
    ),
    (
        "manifest-is-a-folder",
        lambda b: ["study", "plan", _study(b["root"], b["root"] / "folder")],
        2,
        ["is a folder", "manifest.parquet"],
    ),
    (
        "manifest-duplicate-ids",
        lambda b: ["study", "plan", _study(b["root"], b["root"] / "duplicate-ids.parquet")],
        2,
        ["sample_id value(s) occur more than once", "own sample_id"],
    ),
    (
        "manifest-nan-features",
        lambda b: ["study", "plan", _study(b["root"], b["root"] / "nan.parquet")],
        2,
        ["2 sample(s) hold NaN or infinite features", "feature 5 = nan", "non_finite: drop"],
    ),
    (
        "manifest-nan-features-dropped",
        lambda b: [
            "study",
            "plan",
            _study(b["root"], b["root"] / "nan.parquet", data__non_finite="drop"),
        ],
        0,
        ["trials; total compute"],
    ),
    (
        "manifest-ragged-features",
        lambda b: ["study", "plan", _study(b["root"], b["root"] / "ragged.parquet")],
        2,
        ["'features' is ragged", "has 127, most have 128"],
    ),
    (
        "manifest-no-rows",
        lambda b: ["study", "plan", _study(b["root"], b["root"] / "empty.parquet")],
        2,
        ["empty.parquet has no rows"],
    ),
    (
        "out-is-a-file",
        lambda b: [
            "study",
            "run",
            _study(b["root"], b["manifest"]),
            "--out",
            str(b["root"] / "a-file"),
        ],
        2,
        ["output folder", "a-file is not writable"],
    ),
    (
        "synth-images-too-small",
        lambda b: ["data", "synth", "images", "--out", str(b["root"] / "img"), "--size", "32"],
        2,
        ["size 32 px is too small", "at least 48 px"],
    ),
    (
        "import-cellprofiler-root-missing",
        lambda b: [
            "data",
            "import",
            "cellprofiler",
            str(b["root"] / "load_data.csv"),
            "--out",
            str(b["root"] / "m.parquet"),
            "--root",
            str(b["root"] / "no-such-root"),
        ],
        2,
        ["--root", "no-such-root is not a folder"],
    ),
    (
        "import-cellprofiler-input-is-a-folder",
        lambda b: ["data", "import", "cellprofiler", str(b["root"]), "--out", "m.parquet"],
        2,
        ["is a folder", "LoadData"],
    ),
    (
        "fixations-not-json",
        lambda b: _fixations(b, "fix-not-json.json"),
        2,
        ["fix-not-json.json is not valid JSON", "[y, x]"],
    ),
    (
        "fixations-list-shaped",
        lambda b: _fixations(b, "fix-list.json"),
        2,
        ["holds a list", "[y, x]"],
    ),
    (
        "fixations-short-points",
        lambda b: _fixations(b, "fix-short.json"),
        2,
        ["entry 'a/1.png' is not a list of [y, x] number pairs"],
    ),
    (
        "fixations-without-images",
        lambda b: _fixations(b, "fix-short.json", images=False),
        2,
        ["needs --images DIR"],
    ),
    (
        "plan-address-unreachable",
        lambda b: [
            "study",
            "plan",
            _study(b["root"], b["manifest"]),
            "--address",
            f"127.0.0.1:{_closed_port()}",
        ],
        2,
        ["cannot reach the Ray cluster at 127.0.0.1:", "Connection refused"],
    ),
    (
        "plan-address-not-an-address",
        lambda b: ["study", "plan", _study(b["root"], b["manifest"]), "--address", "http://x"],
        2,
        ["'http://x' is not a Ray cluster address"],
    ),
]


@pytest.mark.parametrize(
    ("argv", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_gets_a_clear_error(bad, capsys, argv, code, words):
    t0 = time.monotonic()
    rc = main(argv(bad))
    captured = capsys.readouterr()
    text = captured.err if code else captured.out
    assert rc == code, captured.err
    for word in words:
        assert word in text, text
    assert "Traceback" not in captured.err
    assert time.monotonic() - t0 < 30  # an unreachable address answers within 30 s too


def test_a_study_refused_at_plan_time_leaves_no_study_in_mlflow(bad, capsys):
    """A manifest refused by ``plan`` (NaN features) stops ``study run`` before any MLflow
    experiment, study run or Ray result exists."""
    from mlflow.tracking import MlflowClient

    out = bad["root"] / "refused"
    study = _study(bad["root"], bad["root"] / "nan.parquet")
    assert main(["study", "run", study, "--out", str(out)]) == 2
    assert "NaN or infinite features" in capsys.readouterr().err
    assert not (out / "ray_results").exists()
    if (out / "mlflow.db").exists():
        client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
        assert client.get_experiment_by_name("bad-input") is None


def test_unknown_tracking_scheme_is_refused_before_any_work(bad, capsys):
    out = bad["root"] / "scheme"
    study = _study(bad["root"], bad["manifest"], tracking={"uri": "mlfow://typo:5000"})
    assert main(["study", "run", study, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown scheme 'mlfow'" in err and "http(s)://HOST:PORT" in err
    assert not (out / "mlflow.db").exists()


def test_a_tracking_server_with_credentials_in_its_uri_is_health_checked(tmp_path):
    """``https://user:password@host`` is how basic-auth servers are often given: the health check
    must reach ``/health`` on that host (without the credentials) instead of failing."""
    import http.server
    import threading

    from bioscale.tracking_uri import check_reachable

    seen = []

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Host")))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        check_reachable(f"http://bioscale:s3cret@127.0.0.1:{port}/")
    finally:
        server.shutdown()
    assert seen == [("/health", f"127.0.0.1:{port}")]


def test_harmonized_on_multi_target_labels_is_refused_at_load(bad, capsys):
    """The harmonizer's saliency is that of the one true class; compound targets are several."""
    study = _study(
        bad["root"],
        bad["manifest"],
        grids=[
            {
                "rung": ["debug"],
                "diet": [{}],
                "objective": [{"name": "harmonized", "params": {"task": "target"}}],
            }
        ],
    )
    assert main(["study", "plan", study]) == 2
    err = capsys.readouterr().err
    assert "task: target is not supported" in err and "grids[0].objective[0]" in err
