"""Layer search without Ray: feature layers of every family, one-pass extraction, selection on
validation only, the study option and its trial key, the loop's artifact, the report heat map."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from bioscale.errors import ConfigError
from bioscale.eval.layer_search import CURVES_ARTIFACT, Layer, layer_curves, layers_of
from bioscale.eval.layers import extract_layers, layer_names, resolve_layers
from bioscale.eval.probe import ROLE_CODES, ProbeConfig, probe_task
from bioscale.eval.tasks import evaluate
from bioscale.models.ladder import get_rung

pytestmark = pytest.mark.timeout(60)

FAST = ProbeConfig(cs=(0.1, 1.0), heldout_source=False)


@pytest.mark.parametrize(
    ("rung", "shape", "expected"),
    [
        ("mlp:w64-l1", (12,), {"stem": 64, "blocks.0": 64}),
        ("mlp:w128-l3", (12,), {"stem": 128, "blocks.0": 128, "blocks.1": 128, "blocks.2": 128}),
        (
            "resnet:debug",
            (5, 32, 32),
            {"act1": 64, "layer1": 16, "layer2": 32, "layer3": 64, "layer4": 128},
        ),
        ("vit:debug", (5, 32, 32), {"blocks.0": 64, "blocks.1": 64}),
    ],
)
def test_extractor_returns_every_layer_in_one_pass_and_the_last_is_the_embedding(
    rung, shape, expected
):
    torch.manual_seed(0)
    model = get_rung(rung).build(shape).eval()
    assert layer_names(model) == list(expected)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    batches = [torch.randn(3, *shape), torch.randn(2, *shape)]
    out = extract_layers(model, batches)
    assert len(calls) == len(batches)  # one forward pass per batch, whatever the layer count
    assert {k: v.shape for k, v in out.items()} == {k: (5, d) for k, d in expected.items()}
    assert all(v.dtype == np.float32 for v in out.values())
    with torch.no_grad():
        embedding = torch.cat([model(x) for x in batches]).numpy()
    np.testing.assert_allclose(out[list(expected)[-1]], embedding, rtol=1e-5, atol=1e-6)
    # a configured list by name and index: shallow to deep, nothing else
    names = list(expected)
    first, last = names[0], names[-1]
    assert list(extract_layers(model, batches[:1], [-1, first])) == [first, last]


def test_mlp_residual_block_output_is_the_hidden_state():
    torch.manual_seed(0)
    model = get_rung("mlp:w128-l3").build((10,)).eval()  # blocks.1 carries a residual
    x = torch.randn(4, 10)
    with torch.no_grad():
        h0 = model.blocks[0](model.stem(x))
        out = extract_layers(model, [x], ["blocks.1"])
        expected = model.blocks[1].act(
            model.blocks[1].drop(model.blocks[1].norm(model.blocks[1].linear(h0)))
        )
    np.testing.assert_allclose(out["blocks.1"], (expected + h0).numpy(), rtol=1e-5, atol=1e-6)


def test_unknown_layers_name_the_known_ones():
    model = get_rung("mlp:w64-l1").build((10,))
    with pytest.raises(ValueError, match=r"stem, blocks\.0"):
        resolve_layers(model, ["blocks.7"])
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers(model, [5])
    with pytest.raises(ValueError, match="no feature layers"):
        layer_names(torch.nn.Linear(3, 3))


def _split_signal_layers(seed=0, n_classes=6, per_role=(8, 8, 8), d=16):
    """Two layers: 'val_layer' separates the classes on train+val wells and is noise on test
    wells; 'test_layer' separates them on train+test wells and is noise on val wells."""
    rng = np.random.default_rng(seed)
    centres = 4.0 * rng.normal(size=(n_classes, d))
    role, label = [], []
    for c in range(n_classes):
        for r, count in zip(("probe_train", "probe_val", "probe_test"), per_role, strict=True):
            role += [ROLE_CODES[r]] * count
            label += [c] * count
    role, label = np.array(role), np.array(label)

    def layer(signal_roles):
        z = rng.normal(size=(len(role), d))
        keep = np.isin(role, [ROLE_CODES[r] for r in signal_roles])
        z[keep] += centres[label[keep]]
        return z

    layers = (
        Layer(name="val_layer", index=0, count=2, z=layer(("probe_train", "probe_val"))),
        Layer(name="test_layer", index=1, count=2, z=layer(("probe_train", "probe_test"))),
    )
    return role, label[:, None], layers


def test_search_reports_the_layer_chosen_on_validation_not_the_best_on_test():
    role, labels, layers = _split_signal_layers()
    alone = {
        la.name: probe_task(la.z, role, labels, None, "moa", FAST)["probe/moa/seen_compounds/top1"]
        for la in layers
    }
    assert alone["test_layer"] > 0.9 > 0.5 > alone["val_layer"]  # the test split prefers layer 1

    cfg = replace(FAST, selection="search")
    m = probe_task(layers[-1].z, role, labels, None, "moa", cfg, layers)
    assert m["probe/moa/best_layer"] == 0.0  # validation prefers layer 0
    assert m["probe/moa/best_layer_depth"] == 0.0
    assert m["probe/moa/layer/0/val_top1"] > 0.9 > 0.5 > m["probe/moa/layer/1/val_top1"]
    assert m["probe/moa/seen_compounds/top1"] == pytest.approx(alone["val_layer"])
    assert "probe/moa/C" in m


def _probe_batch(seed=0, d=8):
    """A probe batch with controls, two layers and the final embedding (raw, site level)."""
    rng = np.random.default_rng(seed)
    n_classes, rows = 5, []
    for c in range(n_classes):
        for r, count in (
            ("probe_train", 6),
            ("probe_val", 4),
            ("probe_test", 4),
            ("novel_test", 3),
        ):
            rows += [(ROLE_CODES[r], c)] * count
    rows += [(ROLE_CODES["control"], -1)] * 20
    role = np.array([r for r, _ in rows])
    label = np.array([c for _, c in rows])
    centres = 3.0 * rng.normal(size=(n_classes, d))
    signal = np.where(label[:, None] >= 0, centres[np.maximum(label, 0)], 0.0)
    shallow = rng.normal(size=(len(rows), d))  # carries no class information
    deep = signal + 0.5 * rng.normal(size=(len(rows), d))
    return {
        "emb": deep.astype(np.float32),
        "layer:0/2:stem": shallow.astype(np.float32),
        "layer:1/2:blocks.0": deep.astype(np.float32),
        "role": role,
        "label": label,
        "plate": np.arange(len(rows)) % 2,
        "well": np.arange(len(rows)),
    }


def test_the_suite_searches_layers_and_the_curves_name_them():
    columns = _probe_batch()
    cfg = replace(FAST, tasks=("moa",), selection="search")
    metrics = evaluate(columns, cfg)
    assert metrics["probe/moa/best_layer"] == 1.0
    assert metrics["probe/moa/layer/1/val_top1"] > metrics["probe/moa/layer/0/val_top1"]
    last = evaluate(columns, replace(cfg, selection="last"))
    assert "probe/moa/best_layer" not in last
    assert set(last) - {"perf/eval_seconds"} < set(metrics)
    curves = layer_curves(layers_of(columns), metrics)
    assert curves["probes"]["probe/moa"]["best_layer"] == "blocks.0"
    assert list(curves["probes"]["probe/moa"]["val_top1"]) == ["stem", "blocks.0"]
    assert json.loads(json.dumps(curves)) == curves
    without_layers = {k: v for k, v in columns.items() if not k.startswith("layer:")}
    with pytest.raises(ValueError, match="per-layer embeddings"):
        evaluate(without_layers, cfg)


def test_the_loop_embeds_every_layer_and_reports_the_curves(synth_manifest):
    from functools import partial

    from bioscale.data import manifest as mf
    from bioscale.data.diets import Diet
    from bioscale.data.splits import SampleIndex, SplitConfig
    from bioscale.eval.final import FinalConfig, final_metrics
    from bioscale.study.plan import GridPoint, trial_data
    from bioscale.study.spec import ObjectiveSpec
    from bioscale.train import loop
    from bioscale.train.context import LocalContext

    index = SampleIndex.from_table(mf.read_metadata(synth_manifest), SplitConfig())
    _, x = mf.read_features(synth_manifest)
    point = GridPoint(
        rung="mlp:w64-l1",
        diet=Diet(replicates=1.0),
        objective=ObjectiveSpec(name="supervised"),
        seed=0,
    )
    td, num_classes = trial_data(index, point)
    cfg = loop.LoopConfig(
        rung="mlp:w64-l1",
        input_shape=(x.shape[1],),
        objective="supervised",
        num_classes=num_classes,
        max_epochs=1,
        lr=3e-3,
        weight_decay=1e-6,
        batch_size=64,
        seed=0,
    )
    ctx = LocalContext(
        train={"x": x[td.train.rows], **td.train.columns},
        evals={
            "val": {"x": x[td.val.rows], **td.val.columns},
            "probe": {"x": x[td.probe.rows], **td.probe.columns},
        },
        batch_size=64,
    )
    probe = replace(FAST, tasks=("moa", "leakage"), selection="search")
    final = loop.run(cfg, ctx, final=partial(final_metrics, final=FinalConfig(probe=probe)))
    assert final["probe/moa/best_layer"] in (0.0, 1.0)
    assert 0.0 <= final["probe/moa/novel_compounds/top1"] <= 1.0
    assert "leakage/plate/acc" in final  # tasks that fit no probe still run, on the embedding
    curves = json.loads(final[CURVES_ARTIFACT])
    assert [la["name"] for la in curves["layers"]] == ["stem", "blocks.0"]
    assert set(curves["probes"]["probe/moa"]["val_top1"]) == {"stem", "blocks.0"}


STUDY = {
    "name": "layers",
    "data": {"synthetic": {}},
    "grids": [{"rung": ["mlp:w64-l1"], "diet": [{"replicates": 0.5}], "objective": ["ibp"]}],
    "train": {"budget": {"epochs": 2}},
    "eval": ["moa"],
}


def test_the_option_round_trips_through_the_study_spec():
    from bioscale.study.spec import StudySpec

    spec = StudySpec.from_dict({**STUDY, "probe": {"selection": "search", "layers": ["stem", -1]}})
    assert spec.probe.selection == "search" and spec.probe.layers == ("stem", -1)
    again = StudySpec.from_dict(spec.to_dict())
    assert again.probe == spec.probe and again.sha() == spec.sha()
    assert StudySpec.from_dict(STUDY).probe.selection == "last"
    assert StudySpec.from_dict({**STUDY, "probe": {"selection": "search"}}).probe.layers == "all"
    with pytest.raises(ConfigError, match="selectoin"):
        StudySpec.from_dict({**STUDY, "probe": {"selectoin": "search"}})
    with pytest.raises(ConfigError, match="'last', 'search'"):
        StudySpec.from_dict({**STUDY, "probe": {"selection": "best"}})
    with pytest.raises(ConfigError, match="rung mlp:w64-l1: unknown layer 'layer4'"):
        StudySpec.from_dict({**STUDY, "probe": {"selection": "search", "layers": ["layer4"]}})
    with pytest.raises(ConfigError, match=r"applies to probe\.selection: search"):
        StudySpec.from_dict({**STUDY, "probe": {"layers": ["stem"]}})


def test_selection_is_a_trial_param_and_changes_the_trial_key(synth_manifest):
    from bioscale.study.plan import plan
    from bioscale.study.spec import StudySpec

    def trial(probe):
        return plan(StudySpec.from_dict({**STUDY, "probe": probe}), synth_manifest).trials[0]

    last = trial({})
    search = trial({"selection": "search"})
    assert last.params["probe_selection"] == "last"
    assert search.params["probe_selection"] == "search"
    assert search.key != last.key
    assert trial({"selection": "search", "layers": [-1]}).key != search.key
    assert trial({"cs": [1.0]}).key == last.key  # other probe settings re-evaluate, not retrain


def test_report_draws_a_layer_by_scale_heat_map_per_objective(tmp_path):
    from bioscale.scaling.plots import plot_layer_search

    rows = []
    for objective in ("supervised", "ibp"):
        for n, depth in ((1000, 2), (5000, 4), (20000, 4)):
            for seed in (0, 1):
                row = {"objective": objective, "N": n, "rung": f"r{n}", "seed": seed}
                row["probe_selection"] = "search"
                row |= {
                    f"probe/moa/layer/{i}/val_top1": 0.1 * i + 0.01 * seed for i in range(depth)
                }
                row["probe/moa/best_layer"] = float(depth - 1)
                rows.append(row)
    rows.append({"objective": "ibp", "N": 10, "probe_selection": "last"})  # not drawn
    paths = plot_layer_search(rows, tmp_path, task="moa", title="t")
    assert [p.name for p in paths] == ["layer_search_moa.png"]
    assert paths[0].stat().st_size > 1000
    assert plot_layer_search(rows[-1:], tmp_path, task="moa", title="t") == []

    from bioscale.scaling.report import render

    page = render(
        study="t",
        tracking_uri="sqlite://",
        rows=rows,
        fits=[],
        plots=[],
        metric="probe/moa/novel_compounds/top1",
        metric_label="MoA top-1",
        out=tmp_path / "report.html",
        layer_plots=paths,
    ).read_text()
    assert "<h2>Layer search</h2>" in page and 'src="layer_search_moa.png"' in page
