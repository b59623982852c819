"""``bioscale visualize``: a finished trial's checkpoint → MACO PNGs per target logit, logged to
the same MLflow run; the study report's panel per objective. No Ray: trials are planned from tiny
synthetic natural and Cell Painting datasets, their checkpoints saved where the runner puts them
and their runs logged as the study driver logs them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.timeout(120)

SPLITS = {"probe_train": 1, "probe_val": 1, "probe_test": 1, "early_stop_val": 0}
FAST = ["--steps", "8", "--image-size", "64", "--images", "8", "--crops", "3"]


def _study(name: str, kind: str, manifest, grids) -> dict:
    return {
        "name": name,
        "data": {
            "kind": kind,
            "manifest": str(manifest),
            "splits": SPLITS,
            "image": {"crop": 32},
        },
        "grids": grids,
        "train": {"budget": {"epochs": 1}, "batch_size": 16, "lr": {"value": 1.0e-3}},
        "eval": ["moa"],
    }


def _finish_trials(study: dict, out, with_checkpoint) -> dict:
    """Plan ``study``, save each trial's (untrained) weights as its final checkpoint where
    ``final_checkpoint`` looks (unless ``with_checkpoint(trial)`` is false) and log a FINISHED
    trial run per trial, as the study driver does. Returns ``{objective/replicates: run id}``."""
    import torch

    from bioscale.eval.extract import STATE_FILE
    from bioscale.study.plan import plan
    from bioscale.study.posthoc import trial_folder
    from bioscale.study.runner import tracking_uri
    from bioscale.study.spec import StudySpec
    from bioscale.study.tracking import Tracker
    from bioscale.train.loop import build_network

    spec = StudySpec.from_dict(study)
    tracker = Tracker(tracking_uri(spec, out), artifact_root=out / "mlartifacts")
    exp = tracker.experiment(spec.name)
    parent = tracker.study_run(exp, spec.name, spec.sha())
    runs = {}
    for trial in plan(spec, spec.data.manifest).trials:
        if with_checkpoint(trial):
            torch.manual_seed(0)
            net, _ = build_network(trial.loop)
            folder = out / "ray_results" / f"trial-{trial.key[:16]}" / "checkpoint_000001"
            assert str(folder.parent) == str(trial_folder(out, trial.key))
            folder.mkdir(parents=True)
            torch.save({"model": net.state_dict()}, folder / STATE_FILE)
        run_id = tracker.start_trial(exp, parent, trial.key, trial.point.describe(), trial.params)
        tracker.finish(run_id)
        runs[f"{trial.params['objective']}/{trial.point.diet.replicates:g}"] = run_id
    return runs


@pytest.fixture(scope="module")
def natural(tmp_path_factory):
    """A natural study: supervised resnet:debug at two diets (the smaller one without a
    checkpoint) and mae on vit:debug (no classifier head)."""
    from bioscale.data.natural import SynthNaturalConfig, generate_natural

    root = tmp_path_factory.mktemp("natural")
    manifest = generate_natural(SynthNaturalConfig(per_class=6, size=32), root / "data")
    study = _study(
        "pytest-visualize-natural",
        "natural",
        manifest,
        [
            {
                "rung": ["resnet:debug"],
                "diet": [{"replicates": 1.0}, {"replicates": 0.5}],
                "objective": ["supervised"],
            },
            {"rung": ["vit:debug"], "diet": [{"replicates": 1.0}], "objective": ["mae"]},
        ],
    )
    out = root / "out"
    runs = _finish_trials(study, out, lambda t: t.point.diet.replicates == 1.0)
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path, out, runs


def _tracker(study_path, out):
    from bioscale.study.runner import tracking_uri
    from bioscale.study.spec import StudySpec
    from bioscale.study.tracking import Tracker

    spec = StudySpec.load(str(study_path))
    return spec, Tracker(tracking_uri(spec, out), artifact_root=out / "mlartifacts")


def test_visualize_natural_trial_writes_pngs_and_logs_them_to_its_run(natural, capsys):
    from PIL import Image

    from bioscale.cli import main

    study, out, runs = natural
    run_id = runs["supervised/1"]
    spec, tracker = _tracker(study, out)
    exp = tracker.client.get_experiment_by_name(spec.name).experiment_id
    before = {r.info.run_id for r in tracker.client.search_runs([exp])}

    args = ["visualize", str(study), "--out", str(out), "--run", run_id, *FAST]
    code = main([*args, "--target", "class2", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "target 2 (class2): logit" in printed and "target 0 (class0)" in printed
    assert " → " in printed and " s)" in printed

    folder = out / "visualize" / run_id
    for k in (0, 2):
        img = np.asarray(Image.open(folder / f"target-{k}.png"))
        alpha = np.asarray(Image.open(folder / f"target-{k}-transparency.png"))
        assert img.shape == (64, 64, 3) and alpha.shape == (64, 64)
        assert img.std() > 0 and alpha.max() > 0
    summary = json.loads((folder / "maco.json").read_text())
    assert [t["label"] for t in summary["targets"]] == ["class2", "class0"]
    assert summary["maco"]["steps"] == 8 and summary["spectrum_images"] == 8
    for t in summary["targets"]:  # the target logit rose
        assert t["objective_end"] > t["objective_start"]

    # logged on the trial's own run; no new run
    logged = {a.path for a in tracker.client.list_artifacts(run_id, "visualize")}
    assert {"visualize/target-2.png", "visualize/target-0-transparency.png"} <= logged
    assert "visualize/maco.json" in logged
    assert {r.info.run_id for r in tracker.client.search_runs([exp])} == before


def test_visualize_cellpainting_trial_renders_a_dye_composite(tmp_path):
    from PIL import Image

    from bioscale.data.synth_images import SynthImagesConfig, generate_images
    from bioscale.eval.maco import MacoConfig
    from bioscale.eval.visualize import DEFAULT_TARGETS
    from bioscale.study.posthoc import visualize_run
    from bioscale.study.spec import StudySpec

    # 4 plates: a seen compound's 4 wells fill probe_train/val/test (whole wells) + the pool
    cfg = SynthImagesConfig(size=64, cell_radius=10.0, plates_per_batch=2)
    data = generate_images(cfg, tmp_path / "data")
    study = _study(
        "pytest-visualize-cp",
        "cellpainting",
        data.manifest,
        [{"rung": ["resnet:debug"], "diet": [{"replicates": 1.0}], "objective": ["supervised"]}],
    )
    out = tmp_path / "out"
    run_id = _finish_trials(study, out, lambda t: True)["supervised/1"]
    lines: list[str] = []
    result = visualize_run(
        StudySpec.from_dict(study),
        out,
        run_id,
        cfg=MacoConfig(steps=8, image_size=64, crops=3),
        images=6,
        progress=lines.append,
    )
    assert len(result.targets) == DEFAULT_TARGETS  # default: the first classes, by label
    assert result.spectrum_images == 6
    # named by the trial's label vocabulary (the MoAs it trained on, sorted)
    assert [t.label for t in result.targets] == [f"moa_{k:02d}" for k in range(DEFAULT_TARGETS)]
    assert [t.index for t in result.targets] == list(range(DEFAULT_TARGETS))
    for t in result.targets:
        rgb = np.asarray(Image.open(t.image))
        assert rgb.shape == (64, 64, 3)  # 5 dyes → RGB composite
        assert t.objective_end > t.objective_start
    assert any("mean amplitude spectrum of 6 image(s)" in line for line in lines)


def test_errors_name_what_is_wrong(natural, synth_manifest, tmp_path):
    from bioscale.errors import BioscaleError
    from bioscale.eval.maco import MacoConfig
    from bioscale.study.posthoc import visualize_run
    from bioscale.study.spec import StudySpec

    study, out, runs = natural
    spec = StudySpec.load(str(study))
    cfg = MacoConfig(steps=2, image_size=32, crops=1)
    with pytest.raises(
        BioscaleError,
        match=r"no FINISHED trial run nope in study "
        r"'pytest-visualize-natural' \(sqlite:",
    ):
        visualize_run(spec, out, "nope", cfg=cfg)
    with pytest.raises(BioscaleError, match=r"has no classifier head 'y'.*heads: decoder"):
        visualize_run(spec, out, runs["mae/1"], cfg=cfg)
    with pytest.raises(BioscaleError, match=r"no checkpoint_\*/state.pt under"):
        visualize_run(spec, out, runs["supervised/0.5"], cfg=cfg)
    with pytest.raises(BioscaleError, match=r"--target 'dog'.*its classes: class0"):
        visualize_run(spec, out, runs["supervised/1"], cfg=cfg, targets=["dog"])
    profiles = StudySpec.from_dict(
        {
            "name": "pytest-visualize-profiles",
            "data": {"manifest": str(synth_manifest)},
            "grids": [{"rung": ["debug"], "diet": [{}], "objective": ["supervised"]}],
        }
    )
    with pytest.raises(BioscaleError, match="needs image rungs"):
        visualize_run(profiles, tmp_path, "any", cfg=cfg)
    assert not (out / "visualize" / runs["mae/1"]).exists()


def test_cli_reports_an_unknown_run_as_an_error(natural, capsys):
    from bioscale.cli import main

    study, out, _ = natural
    assert main(["visualize", str(study), "--out", str(out), "--run", "nope", *FAST]) == 2
    err = capsys.readouterr().err
    assert "no FINISHED trial run nope in study 'pytest-visualize-natural'" in err


def _fake_visualization(out, run_id: str, labels: list[str]) -> None:
    from PIL import Image

    folder = out / "visualize" / run_id
    folder.mkdir(parents=True)
    targets = []
    for k, label in enumerate(labels):
        for name in (f"target-{k}.png", f"target-{k}-transparency.png"):
            Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).save(folder / name)
        targets.append(
            {
                "index": k,
                "label": label,
                "image": f"target-{k}.png",
                "transparency": f"target-{k}-transparency.png",
                "objective_start": 0.5,
                "objective_end": 4.25,
                "seconds": 1.0,
            }
        )
    summary = {"targets": targets, "maco": {"steps": 8, "image_size": 8}, "spectrum_images": 3}
    (folder / "maco.json").write_text(json.dumps(summary))


def test_report_shows_one_panel_per_objective_for_the_largest_rung(tmp_path):
    from bioscale.eval.visualize import report_panels
    from bioscale.scaling.report import render

    out = tmp_path / "out"
    rows = [
        {"run_id": "small-sup", "objective": "supervised", "rung": "r1", "N": 100},
        {"run_id": "big-sup", "objective": "supervised", "rung": "r2", "N": 1000},
        {"run_id": "biggest-sup-unvisualised", "objective": "supervised", "rung": "r3", "N": 10**4},
        {"run_id": "small-ibp", "objective": "ibp", "rung": "r1", "N": 100},
    ]
    _fake_visualization(out, "small-sup", ["a"])
    _fake_visualization(out, "big-sup", ["cat", "dog"])
    _fake_visualization(out, "small-ibp", ["a"])
    _fake_visualization(out, "not-a-trial-of-this-study", ["x"])
    report_dir = out / "report"
    panels = report_panels(rows, out, report_dir)
    assert [p.title for p in panels] == ["ibp · r1 (N = 100)", "supervised · r2 (N = 1,000)"]
    sup = panels[1]
    assert [caption for caption, _, _ in sup.items] == [
        "cat: logit 0.50 → 4.25",
        "dog: logit 0.50 → 4.25",
    ]
    for _, image, alpha in sup.items:  # copied beside the report
        assert image.parent == report_dir and image.is_file() and alpha.is_file()

    def page(vis):
        return render(
            study="s",
            tracking_uri="sqlite:///x",
            rows=rows,
            fits=[],
            plots=[],
            metric="m",
            metric_label="m",
            out=report_dir / "report.html",
            vis_panels=vis,
        ).read_text()

    html = page(panels)
    assert html.count("<h3>") == 2 and "Feature visualisations (MACO)" in html
    assert f'src="{sup.items[1][1].name}"' in html and f'src="{sup.items[1][2].name}"' in html
    assert "Feature visualisations" not in page([])
    assert report_panels(rows, tmp_path / "nothing-here", report_dir) == []
