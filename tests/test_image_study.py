"""An image study end to end: LZW TIFF sites → Ray Data decode stream → timm debug rung → MLflow."""

import numpy as np
import pytest
import tifffile

from bioscale.data import manifest as mf
from bioscale.data.synth import SynthProfilesConfig, generate_profiles

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
DYES = ("DNA", "ER", "Mito")


def write_image_screen(out):
    """Sites whose pixels carry each compound's MoA: a bright square whose position and dye
    depend on the MoA, over plate-dependent background noise (written as LZW uint16 TIFFs)."""
    manifest = generate_profiles(
        SynthProfilesConfig(
            seed=5,
            n_moa=4,
            compounds_per_moa=4,
            n_extra=4,
            n_unlabelled_moa=1,
            plates_per_batch=1,
            n_features=8,
        ),
        out / "profiles",
    )
    table = mf.read_metadata(manifest)
    cols = {c: table.column(c).to_pylist() for c in mf.METADATA_COLUMNS}
    rng = np.random.default_rng(0)
    for dye in DYES:
        cols[f"path_{dye}"] = []
    for sid, moa in zip(cols["sample_id"], cols["moa"], strict=True):
        k = int(moa.split("_")[1]) if moa else 7
        img = rng.normal(1000, 150, size=(len(DYES), 48, 48)).clip(0, None)
        if moa:
            y, x = 8 + 8 * (k % 3), 8 + 8 * (k // 3)
            img[k % len(DYES), y : y + 12, x : x + 12] += 4000
        for c, dye in enumerate(DYES):
            path = out / "images" / f"{sid}-ch{c + 1}.tiff"
            path.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(path, img[c].astype(np.uint16), compression="lzw")
            cols[f"path_{dye}"].append(str(path))
    return mf.write_images(out / "manifest.parquet", cols, list(DYES))


@pytest.fixture(scope="module")
def image_study(ray_local, tmp_path_factory):
    from bioscale.study.runner import run_study
    from bioscale.study.spec import StudySpec

    out = tmp_path_factory.mktemp("images")
    manifest = write_image_screen(out)
    spec = StudySpec.from_dict(
        {
            "name": "pytest-images",
            "data": {
                "kind": "cellpainting",
                "manifest": str(manifest),
                "splits": {"probe_train": 1, "probe_val": 1, "probe_test": 1, "early_stop_val": 0},
                "image": {
                    "crop": 32,
                    "crops_per_site": 2,
                    "decode_batch_size": 8,
                    "decode_cpus": 0.25,
                },
            },
            "grids": [
                {
                    "rung": ["resnet:debug"],
                    "diet": [{"replicates": 1.0}],
                    "objective": ["supervised"],
                }
            ],
            "train": {"budget": {"epochs": 2}, "batch_size": 32, "lr": {"value": 1.0e-3}},
            "resources": {
                "cpus_per_worker": 0.5,
                "max_concurrent_trials": 1,
                "data_cpus_per_task": 0.1,
            },
        }
    )
    result = run_study(spec, out / "run", progress=lambda m: None)
    return spec, result


def test_image_trial_trains_from_decoded_crops_and_logs_like_profiles(image_study):
    from bioscale.study.tracking import Tracker

    _, result = image_study
    assert result.failed == 0 and result.finished == 1
    tracker = Tracker(result.tracking_uri)
    (run,) = tracker.runs(result.experiment_id, "trial")
    assert run.info.status == "FINISHED"
    assert run.data.params["model_family"] == "resnet" and run.data.params["rung"] == "resnet:debug"
    metrics = run.data.metrics
    assert 0.0 <= metrics["probe/moa/novel_compounds/top1"] <= 1.0
    assert metrics["compute/flops"] > 0 and metrics["train/loss"] > 0
    # 2 random crops per site per pass
    d = int(run.data.params["D_samples"])
    assert metrics["train/samples_seen"] == pytest.approx(2 * 2 * d)


def test_plan_rejects_a_profile_manifest_for_an_image_study(synth_manifest):
    from bioscale.errors import ManifestError
    from bioscale.study.plan import plan
    from bioscale.study.spec import StudySpec

    spec = StudySpec.from_dict(
        {
            "name": "x",
            "data": {"kind": "cellpainting", "manifest": str(synth_manifest)},
            "grids": [{"rung": ["resnet:debug"], "diet": [{}], "objective": ["supervised"]}],
        }
    )
    with pytest.raises(ManifestError, match=r"holds profiles; data\.kind 'cellpainting' needs"):
        plan(spec, synth_manifest)


def test_empty_probe_sets_fail_at_plan_time(synth_manifest):
    from bioscale.errors import ConfigError
    from bioscale.study.plan import plan
    from bioscale.study.spec import StudySpec

    spec = StudySpec.from_dict(
        {
            "name": "x",
            "data": {"manifest": str(synth_manifest), "splits": {"probe_test": 20}},
            "grids": [{"rung": ["debug"], "diet": [{}], "objective": ["ibp"]}],
        }
    )
    with pytest.raises(ConfigError, match="probe set 'probe_train' is empty"):
        plan(spec, synth_manifest)


@pytest.fixture(scope="module")
def natural_study(ray_local, tmp_path_factory):
    from bioscale.data.natural import SynthNaturalConfig, generate_natural
    from bioscale.study.runner import run_study
    from bioscale.study.spec import StudySpec

    out = tmp_path_factory.mktemp("natural")
    manifest = generate_natural(SynthNaturalConfig(per_class=12, size=32), out / "data")
    spec = StudySpec.from_dict(
        {
            "name": "pytest-natural",
            "data": {
                "kind": "natural",
                "manifest": str(manifest),
                "splits": {"probe_train": 2, "probe_val": 1, "probe_test": 2, "early_stop_val": 1},
                "image": {"crop": 32, "decode_batch_size": 16, "decode_cpus": 0.25},
            },
            "grids": [
                {
                    "rung": ["resnet:debug"],
                    "diet": [{"replicates": 1.0}],
                    "objective": ["harmonized", "ibp"],
                }
            ],
            "train": {"budget": {"epochs": 2}, "batch_size": 16, "lr": {"value": 1.0e-3}},
            "resources": {
                "cpus_per_worker": 0.5,
                "max_concurrent_trials": 1,
                "data_cpus_per_task": 0.1,
            },
        }
    )
    return run_study(spec, out / "run", progress=lambda m: None)


def test_harmonized_study_on_natural_images(natural_study):
    from bioscale.study.tracking import Tracker

    result = natural_study
    assert result.failed == 0 and result.finished == 2
    runs = {
        r.data.params["objective"]: r
        for r in Tracker(result.tracking_uri).runs(result.experiment_id, "trial")
    }
    harmonized = runs["harmonized"]
    assert harmonized.data.metrics["train/align"] > 0
    # the harmonizer's published weight decay reaches the optimiser; its FLOPs include the
    # double backward, so a step costs more than IBP's
    assert float(runs["harmonized"].data.params["flops_per_sample"]) > float(
        runs["ibp"].data.params["flops_per_sample"]
    )
    assert 0.0 <= harmonized.data.metrics["probe/moa/seen_compounds/top1"] <= 1.0
