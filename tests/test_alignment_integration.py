"""Biological alignment in studies: the ``alignment:`` spec, plan's checks and skips, a local
(no Ray) trial that logs ``align/*``, ``adv/*``, ``neural/*`` and ``probe/3dpc_*``, and the
report's accuracy-vs-alignment section."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bioscale.config import from_mapping, to_mapping
from bioscale.errors import ConfigError
from bioscale.study.plan import load_index, plan, trial_data
from bioscale.study.spec import StudySpec
from bioscale.train import loop

SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A natural-image manifest with maps, a neural dataset folder and a 3D-PC task folder."""
    from bioscale.data.natural import SynthNaturalConfig, generate_natural, load_image
    from bioscale.data.synth_3dpc import Synth3DPCConfig, generate_3dpc
    from bioscale.eval.neural import write_neural_dataset

    root = tmp_path_factory.mktemp("alignment")
    manifest = generate_natural(
        SynthNaturalConfig(per_class=14, size=SIZE, map_fraction=0.8), root / "natural"
    )
    # neural: 18 of the images as stimuli; 6 "neurons" read linear mixtures of colour means
    stimuli = [r["path_image"] for r in pq.read_table(manifest).to_pylist()[::3]][:18]
    pix = np.stack([load_image(p, SIZE).reshape(3, -1).mean(axis=1) for p in stimuli])
    rng = np.random.default_rng(0)
    signal = pix @ rng.normal(size=(3, 6))
    repeats = signal[:, :, None] + rng.normal(0, 0.02, (18, 6, 4))
    neural = write_neural_dataset(
        root / "neural",
        images=stimuli,
        responses=repeats.mean(axis=2),
        repeats=repeats,
        name="synth_it",
    )
    threedpc = generate_3dpc(
        Synth3DPCConfig(size=SIZE, train=6, val=3, test=3, human=0, tasks=("depth",)),
        root / "3dpc",
    )
    return {"manifest": manifest, "neural": neural, "threedpc": threedpc, "root": root}


def study(
    data, alignment=None, objectives=("supervised",), rungs=("resnet:debug",), maps=None, **extra
):
    spec = {
        "name": "align",
        "data": {
            "kind": "natural",
            "manifest": str(data["manifest"]),
            "splits": {"probe_train": 2, "probe_val": 1, "probe_test": 2, "early_stop_val": 3},
            "image": {"crop": SIZE},
            **({"maps": maps} if maps is not None else {}),
        },
        "grids": [{"rung": list(rungs), "diet": [{"replicates": 1.0}], "objective": objectives}],
        "train": {"budget": {"epochs": 2}, "batch_size": 16, "lr": {"value": 3e-3}},
        **extra,
    }
    if alignment is not None:
        spec["alignment"] = alignment
    return StudySpec.from_dict(spec)


def full_alignment(data):
    return {
        "saliency": True,
        "adversarial": {"max_images": 8, "bisections": 3},
        "neural": [{"path": str(data["neural"]), "folds": 3, "n_components": 4}],
        "threedpc": {"root": str(data["threedpc"]), "tasks": ["depth"], "epochs": 3},
    }


# ------------------------------------------------------------------------------------- spec


def test_alignment_section_parses_and_round_trips(data):
    spec = study(data, full_alignment(data), eval=["moa"])
    cfg = spec.alignment
    assert cfg.enabled() == ("saliency", "adversarial", "neural", "threedpc")
    assert cfg.adversarial.max_images == 8 and cfg.adversarial.steps == 3  # published default
    assert spec.probe.tasks == ("moa",)  # ``eval:`` lists keep working beside ``alignment:``
    again = StudySpec.from_dict(spec.to_dict())
    assert again.alignment == cfg and again.sha() == spec.sha()


@pytest.mark.parametrize(
    ("alignment", "message"),
    [
        ({"saliency": True, "adversial": {}}, "unknown key 'adversial'"),
        ({"adversarial": {"max_imgs": 8}}, "unknown key 'max_imgs'"),
        ({"neural": [{"path": "x", "nmae": "a"}]}, "unknown key 'nmae'"),
        ({"threedpc": {"root": "x", "task": ["depth"]}}, "unknown key 'task'"),
        ({}, "enable at least one"),
        ({"saliency": False}, "enable at least one"),
        ({"saliency": True, "ceiling": 1.5}, "ceiling"),
        ({"neural": [{"path": "a", "name": "x/y"}]}, "contain no '/'"),
        ({"neural": [{"path": "a", "folds": 2}]}, "folds must be >= 3"),
        ({"threedpc": {"root": "x", "tasks": []}}, "at least one"),
    ],
)
def test_alignment_spec_errors_name_the_problem(data, alignment, message):
    with pytest.raises(ConfigError, match=message):
        study(data, alignment)


def test_alignment_refuses_data_kinds_it_cannot_apply_to(data):
    profiles = {
        "name": "p",
        "data": {"synthetic": {}},
        "grids": [{"rung": ["debug"], "diet": [{"replicates": 1.0}], "objective": ["ibp"]}],
    }
    with pytest.raises(ConfigError, match=r"alignment\.saliency .* 'profiles' has no images"):
        StudySpec.from_dict({**profiles, "alignment": {"saliency": True}})
    cellpainting = {
        **profiles,
        "data": {"kind": "cellpainting", "manifest": "cp.parquet"},
        "grids": [{"rung": ["resnet:debug"], "diet": [{"replicates": 1.0}], "objective": ["ibp"]}],
    }
    with pytest.raises(ConfigError, match=r"alignment\.neural .* not data.kind 'cellpainting'"):
        StudySpec.from_dict({**cellpainting, "alignment": {"neural": [{"path": "n"}]}})
    with pytest.raises(ConfigError, match=r"alignment\.threedpc"):
        StudySpec.from_dict({**cellpainting, "alignment": {"threedpc": {"root": "t"}}})
    # map evaluations on Cell Painting are the manifest's business (checked by plan)
    StudySpec.from_dict({**cellpainting, "alignment": {"saliency": True}})


# ------------------------------------------------------------------------------------- plan


def test_plan_names_a_missing_neural_file_and_what_to_do(data, tmp_path):
    import shutil

    broken = tmp_path / "neural"
    shutil.copytree(data["neural"], broken)
    (broken / "responses.npy").unlink()
    spec = study(data, {"neural": [{"path": str(broken)}]})
    with pytest.raises(
        ConfigError, match=r"alignment.neural\[0\]: .*responses.npy is missing.*numpy.save"
    ):
        plan(spec, data["manifest"])


def test_plan_names_a_missing_3dpc_split_and_task(data, tmp_path):
    import shutil

    broken = tmp_path / "3dpc"
    shutil.copytree(data["threedpc"], broken)
    shutil.rmtree(broken / "depth" / "val")
    spec = study(data, {"threedpc": {"root": str(broken), "tasks": ["depth"]}})
    with pytest.raises(ConfigError, match=r"task 'depth'.*lacks split folder\(s\) \['val'\]"):
        plan(spec, data["manifest"])
    spec = study(data, {"threedpc": {"root": str(data["threedpc"]), "tasks": ["vpt_basic"]}})
    with pytest.raises(ConfigError, match="vpt_basic does not exist"):
        plan(spec, data["manifest"])


def test_plan_refuses_map_evaluations_without_maps(data, tmp_path):
    from bioscale.data.natural import SynthNaturalConfig, generate_natural

    mapless = generate_natural(
        SynthNaturalConfig(per_class=8, size=SIZE, map_fraction=0.0), tmp_path / "mapless"
    )
    spec = study({**data, "manifest": mapless}, {"adversarial": {}})
    with pytest.raises(ConfigError, match=r"alignment\.adversarial needs images with human"):
        plan(spec, mapless)


def test_plan_checks_neural_layers_on_every_rung(data):
    spec = study(data, {"neural": [{"path": str(data["neural"]), "layers": ["layer9"]}]})
    with pytest.raises(ConfigError, match=r"neural\[0\].layers, rung resnet:debug: unknown layer"):
        plan(spec, data["manifest"])


def test_plan_skips_map_evaluations_for_objectives_without_a_classifier(data, caplog):
    alignment = {
        "saliency": True,
        "adversarial": {},
        "threedpc": {"root": str(data["threedpc"]), "tasks": ["depth"]},
    }
    spec = study(data, alignment, objectives=["supervised", "mae"], rungs=["vit:debug"])
    with caplog.at_level("WARNING", logger="bioscale.study.plan"):
        planned = plan(spec, data["manifest"])
    by = {t.point.objective.name: t for t in planned.trials}
    assert by["supervised"].final.alignment.enabled() == ("saliency", "adversarial", "threedpc")
    assert by["mae"].final.alignment.enabled() == ("threedpc",)
    assert by["supervised"].notes == ()
    ((point, why),) = planned.skipped
    assert point.objective.name == "mae"
    assert "saliency, adversarial" in why and "classifier head" in why
    assert "classifier head" in caplog.text


def test_trial_config_carries_alignment_with_absolute_paths(data, monkeypatch):
    monkeypatch.chdir(data["root"])
    relative = {
        "saliency": True,
        "neural": [{"path": "neural", "folds": 3}],
        "threedpc": {"root": "3dpc", "tasks": ["depth"]},
    }
    trial = plan(study(data, relative), data["manifest"]).trials[0]
    cfg = trial.final.alignment
    assert cfg.neural[0].path == str(data["neural"].resolve())
    assert cfg.threedpc.root == str(Path(data["threedpc"]).resolve())
    # the Ray worker rebuilds the loop config from its mapping
    assert from_mapping(loop.LoopConfig, to_mapping(trial.loop), "loop") == trial.loop
    # alignment is part of the trial (a changed evaluation is a new trial); no alignment keeps
    # the key a study without the section always had
    plain = plan(study(data), data["manifest"]).trials[0]
    assert plain.final.alignment is None and plain.key != trial.key
    fewer = plan(study(data, {"saliency": True}), data["manifest"]).trials[0]
    assert fewer.key not in (trial.key, plain.key)


def test_map_blur_is_a_natural_data_setting_and_part_of_the_trial_key(data):
    release = plan(study(data), data["manifest"]).trials[0]
    assert study(data).data.maps.blur == "release"  # the ClickMe release's preprocessing
    again = plan(study(data, maps={"blur": "release"}), data["manifest"]).trials[0]
    assert again.key == release.key
    keys = {
        plan(study(data, maps=m), data["manifest"]).trials[0].key
        for m in ({"blur": "none"}, {"blur": "gaussian"}, {"blur": "gaussian", "sigma_px": 4.0})
    }
    assert len(keys) == 3 and release.key not in keys  # another blur: another trial
    spec = study(data, maps={"blur": "gaussian", "sigma_px": 4.0})
    assert StudySpec.from_dict(spec.to_dict()).data.maps == spec.data.maps
    with pytest.raises(ConfigError, match=r"data\.maps: unknown key 'sigma'"):
        study(data, maps={"blur": "gaussian", "sigma": 4.0})
    with pytest.raises(ConfigError, match=r"sigma_px sets the σ of blur: gaussian"):
        study(data, maps={"sigma_px": 4.0})
    cellpainting = {
        "name": "cp",
        "data": {"kind": "cellpainting", "manifest": "cp.parquet", "maps": {"blur": "none"}},
        "grids": [{"rung": ["resnet:debug"], "diet": [{"replicates": 1.0}], "objective": ["ibp"]}],
    }
    with pytest.raises(
        ConfigError, match=r"data\.maps does not apply to data\.kind 'cellpainting'"
    ):
        StudySpec.from_dict(cellpainting)


def test_clickme_ceiling_scores_only_release_blurred_maps(data, caplog):
    from bioscale.eval.alignment import CLICKME_CEILING

    clickme = {"saliency": True, "ceiling": CLICKME_CEILING}
    assert study(data, clickme).alignment.ceiling == CLICKME_CEILING
    with caplog.at_level("WARNING", logger="bioscale.eval.trial_alignment"):
        spec = study(data, clickme, maps={"blur": "gaussian"})
    assert spec.alignment.ceiling is None  # raw ρ only: no align/score
    assert "ClickMe's human ceiling" in caplog.text and "align/spearman" in caplog.text
    # a ceiling of the study's own holds for the maps it was measured on
    assert study(data, {"saliency": True, "ceiling": 0.5}, maps={"blur": "none"}).alignment.ceiling
    cellpainting = {
        "name": "cp",
        "data": {"kind": "cellpainting", "manifest": "cp.parquet"},
        "grids": [{"rung": ["resnet:debug"], "diet": [{"replicates": 1.0}], "objective": ["ibp"]}],
        "alignment": clickme,
    }
    assert StudySpec.from_dict(cellpainting).alignment.ceiling is None


def test_alignment_images_are_the_probe_test_ones(data):
    spec = study(data, {"saliency": True})
    index = load_index(spec, data["manifest"])
    trial = plan(spec, data["manifest"]).trials[0]
    td, _ = trial_data(index, trial.point)
    probe_test = index.where(role="probe_test")
    assert len(probe_test) == 8  # 2 per class
    assert sorted(td.held_out.rows) == sorted(probe_test)
    assert not set(td.held_out.rows) & set(td.val.rows)  # none of the early-stopping images
    assert not set(td.held_out.rows) & set(td.train.rows)
    # labelled as the objective's head is: the class code training uses for the same class
    train_code = dict(zip(index.moa[td.train.rows], td.train.columns["y"], strict=True))
    assert [train_code[c] for c in index.moa[td.held_out.rows]] == list(td.held_out.columns["y"])
    # an objective without a classifier head has none
    mae = plan(
        study(data, {"saliency": True}, objectives=["mae"], rungs=["vit:debug"]), data["manifest"]
    )
    assert trial_data(index, mae.trials[0].point)[0].held_out is None


# ------------------------------------------------------------------------ a trial, locally


def natural_arrays(manifest, index, rows, columns):
    from bioscale.data.natural import load_image, load_map

    table = {r["sample_id"]: r for r in pq.read_table(manifest).to_pylist()}
    x, maps, has = [], [], []
    for sid in index.sample_id[rows]:
        r = table[sid]
        x.append(load_image(r["path_image"], SIZE))
        m = load_map(r["path_map"], SIZE) if r["path_map"] else None
        has.append(m is not None)
        maps.append(m if m is not None else np.zeros((SIZE, SIZE), np.float32))
    return {
        "x": np.stack(x),
        "map": np.stack(maps),
        "has_map": np.array(has),
        **columns,
    }


@pytest.mark.timeout(120)
def test_local_trial_logs_every_alignment_metric(data):
    from functools import partial

    from bioscale.eval.final import final_metrics
    from bioscale.train.context import LocalContext

    spec = study(data, full_alignment(data))
    trial = plan(spec, data["manifest"]).trials[0]
    index = load_index(spec, data["manifest"])
    td, _ = trial_data(index, trial.point)
    m = data["manifest"]
    cfg = replace(trial.loop, precision="fp32", channels_last=False, max_epochs=3)
    val = natural_arrays(m, index, td.val.rows, td.val.columns)
    val["has_map"][:] = False  # alignment must not read the early-stopping images
    held_out = natural_arrays(m, index, td.held_out.rows, td.held_out.columns)
    with_maps = int(held_out["has_map"].sum())
    assert with_maps > 0
    ctx = LocalContext(
        train={
            k: v
            for k, v in natural_arrays(m, index, td.train.rows, td.train.columns).items()
            if k in ("x", "y")
        },
        evals={
            "val": val,
            "probe": natural_arrays(m, index, td.probe.rows, td.probe.columns),
            "held_out": held_out,
        },
        batch_size=16,
    )
    start = time.perf_counter()
    final = loop.run(cfg, ctx, final=partial(final_metrics, final=trial.final))
    assert time.perf_counter() - start < 60
    assert ctx.reports[-1].items() >= final.items()  # what the driver logs
    # saliency alignment on the probe-test images with a map, every one of them
    for k in ("align/spearman", "align/dice10", "align/iou10", "align/top1"):
        assert math.isfinite(final[k]), k
    assert final["align/n_images"] == with_maps
    assert -1.0 <= final["align/spearman"] <= 1.0
    assert "align/score" not in final  # no ceiling configured
    # adversarial: every attacked image is correct and has a map; at most max_images
    attacked = final["adv/n_images"] + final["adv/n_misclassified"]
    assert attacked == min(8, with_maps)
    assert final["adv/n_skipped"] <= final["adv/n_images"]
    if final["adv/n_images"] > final["adv/n_skipped"]:
        assert 0.01 <= final["adv/min_eps_l2/median"] <= 10.0
    # neural predictivity on the folder's dataset name, with the split-half ceiling
    assert final["neural/synth_it/n_images"] == 18.0
    assert 0.0 < final["neural/synth_it/ceiling"] <= 1.0
    assert math.isfinite(final["neural/synth_it/score"])
    assert final["neural/synth_it/explained"] == pytest.approx(
        final["neural/synth_it/raw"] / math.sqrt(final["neural/synth_it/ceiling"])
    )
    assert final["neural/synth_it/best_layer"] >= 0
    # the 3D-PC probe at the rung's input size
    assert 0.0 <= final["probe/3dpc_depth/test/acc"] <= 1.0
    assert final["probe/3dpc_depth/n_train"] == 12.0
    for name in ("saliency", "adversarial", "neural", "threedpc"):
        assert final[f"perf/eval_{name}_seconds"] > 0.0


def test_network_without_classifier_skips_map_evaluations(data, caplog):
    import torch

    from bioscale.eval.trial_alignment import AlignmentConfig, run_alignment
    from bioscale.models.ladder import get_rung
    from bioscale.train.loop import Network

    backbone = get_rung("resnet:debug").build((3, SIZE, SIZE))
    net = Network(backbone, torch.nn.ModuleDict())
    cfg = AlignmentConfig(saliency=True)
    with caplog.at_level("WARNING", logger="bioscale.eval.trial_alignment"):
        out = run_alignment(net, cfg, held_out=lambda: iter(()), device="cpu", image_size=SIZE)
    assert out == {}
    assert "no classifier head" in caplog.text


# ----------------------------------------------------------------------------------- report


def alignment_rows():
    rows = []
    for objective, sign in (("supervised", 1.0), ("harmonized", -1.0)):
        for n in (1_000, 10_000, 100_000):
            for seed in (0, 1):
                a = 0.3 + sign * 0.05 * math.log10(n) + 0.01 * seed
                rows.append(
                    {
                        "objective": objective,
                        "rung": f"r{n}",
                        "N": n,
                        "diet": "r=1",
                        "D_samples": 100,
                        "seed": seed,
                        "probe/moa/seen_compounds/top1": 0.4 + 0.1 * math.log10(n),
                        "align/spearman": a,
                        "align/top1": 0.5,
                        "adv/alignment/mean": a / 2,
                        "adv/n_images": 8.0,
                        "neural/it/score": 0.2 + 0.01 * seed,
                        "probe/3dpc_depth/test/acc": 0.5 + 0.02 * math.log10(n),
                    }
                )
    return rows


def test_alignment_trends_and_plots(tmp_path):
    from bioscale.scaling.alignment import (
        accuracy_column,
        alignment_columns,
        describe_trends,
        plot_alignment,
    )

    rows = alignment_rows()
    columns = alignment_columns(rows)
    assert columns == [
        "align/spearman",
        "adv/alignment/mean",
        "neural/it/score",
        "probe/3dpc_depth/test/acc",
    ]
    # natural images without novel classes: the seen-compound split stands in
    assert accuracy_column(rows, "probe/moa/novel_compounds/top1") == (
        "probe/moa/seen_compounds/top1"
    )
    trends = describe_trends(rows, columns)
    sup = next(t for t in trends if t.startswith("supervised"))
    har = next(t for t in trends if t.startswith("harmonized"))
    assert "align/spearman rises (Spearman ρ = +0.9" in sup and "n = 6, 3 sizes" in sup
    assert "align/spearman falls" in har
    assert "neural/it/score shows no clear trend" in sup
    plots = plot_alignment(rows, tmp_path, metric="probe/moa/novel_compounds/top1", title="t")
    assert sorted(p.name for p in plots) == ["alignment_harmonized.png", "alignment_supervised.png"]
    assert all(p.stat().st_size > 5_000 for p in plots)


def test_report_has_an_alignment_section_only_with_alignment_metrics(tmp_path):
    from bioscale.scaling.api import report_table

    rows = alignment_rows()
    built = report_table(
        rows,
        tmp_path / "with",
        title="t",
        source="sqlite://",
        metric="probe/moa/seen_compounds/top1",
        direction="higher",
        specs=[],
        trial_columns=["rung", "N", "objective"],
        n_boot=0,
    )
    page = built.report.read_text()
    assert "Biological alignment beside accuracy" in page
    assert "supervised: as N grows, align/spearman rises" in page
    assert "alignment_supervised.png" in page
    assert {p.name for p in built.plots} >= {"alignment_supervised.png", "alignment_harmonized.png"}
    assert "<th class=l>align/spearman</th>" in page  # the trial table lists the metrics
    bare = [
        {
            k: v
            for k, v in r.items()
            if not k.startswith(("align/", "adv/", "neural/", "probe/3dpc"))
        }
        for r in rows
    ]
    built = report_table(
        bare,
        tmp_path / "without",
        title="t",
        source="sqlite://",
        metric="probe/moa/seen_compounds/top1",
        direction="higher",
        specs=[],
        n_boot=0,
    )
    assert "Biological alignment" not in built.report.read_text()
    assert not list((tmp_path / "without").glob("alignment_*.png"))
