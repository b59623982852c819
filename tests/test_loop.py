"""The training loop without Ray (LocalContext): learning, budgets, early stopping, resume."""

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from bioscale.data import manifest as mf
from bioscale.data.diets import Diet
from bioscale.data.splits import SampleIndex, SplitConfig
from bioscale.errors import BioscaleError, TrainingError
from bioscale.eval.final import FinalConfig, final_metrics
from bioscale.eval.probe import ProbeConfig
from bioscale.objectives.ibp import IBP
from bioscale.study.plan import GridPoint, trial_data
from bioscale.study.spec import ObjectiveSpec
from bioscale.train import loop
from bioscale.train.context import LocalContext
from bioscale.train.rules import Budget, EarlyStopping

#: the final evaluation these tests wire into the loop (the study binds the plan's)
FINAL = functools.partial(final_metrics, final=FinalConfig(probe=ProbeConfig(cs=(0.1, 1.0))))


@pytest.fixture(scope="module")
def data(synth_manifest):
    index = SampleIndex.from_table(mf.read_metadata(synth_manifest), SplitConfig())
    _, x = mf.read_features(synth_manifest)
    return index, x


def make(data, objective="ibp", objective_params=None, **overrides):
    index, x = data
    point = GridPoint(
        rung="debug",
        diet=Diet(replicates=1.0, extra="all"),
        objective=ObjectiveSpec(name=objective, params=objective_params or {}),
        seed=0,
    )
    td, num_classes = trial_data(index, point)
    cfg = loop.LoopConfig(
        rung="debug",
        input_shape=(x.shape[1],),
        objective=objective,
        objective_params=objective_params or {},
        num_classes=num_classes,
        max_epochs=overrides.pop("max_epochs", 6),
        lr=3e-3,
        weight_decay=1e-6,
        batch_size=64,
        seed=0,
        flops_per_sample=100.0,
        **overrides,
    )

    def ctx(context=LocalContext, **kw):
        return context(
            train={"x": x[td.train.rows], **td.train.columns},
            evals={
                "val": {"x": x[td.val.rows], **td.val.columns},
                "probe": {"x": x[td.probe.rows], **td.probe.columns},
            },
            batch_size=64,
            **kw,
        )

    return cfg, ctx, len(td.train.rows)


def epoch_metrics(ctx):
    """Per-epoch metrics, unbatched from the reports' ``history``."""
    return [m for r in ctx.reports for m in r.get("history", ())]


@pytest.mark.parametrize("objective", ["supervised", "ibp"])
def test_loop_learns_and_probes(data, objective):
    cfg, ctx, _ = make(data, objective)
    c = ctx()
    final = loop.run(cfg, c, final=FINAL)
    epochs = epoch_metrics(c)
    assert len(epochs) == 6
    assert epochs[-1]["train/loss"] < epochs[0]["train/loss"]
    assert {"val/loss", "perf/samples_per_s", "train/ce"} <= set(epochs[0])
    for split in ("seen_compounds", "novel_compounds"):
        for k in ("top1", "top10"):
            assert 0.0 <= final[f"probe/moa/{split}/{k}"] <= 1.0
    assert final["probe/moa/seen_compounds/top10"] >= final["probe/moa/seen_compounds/top1"]
    assert final["compute/flops"] == pytest.approx(100.0 * final["train/samples_seen"])


def test_samples_budget_stops_mid_epoch(data):
    cfg, ctx, _ = make(data, max_epochs=50, max_samples=2 * 64 + 10)
    final = loop.run(cfg, ctx())
    assert 2 * 64 + 10 <= final["train/samples_seen"] < 2 * 64 + 10 + 64
    assert Budget(samples=1000).resolve(n_params=10, d_samples=300) == (4, 1000)
    assert Budget(samples_per_parameter=20).resolve(n_params=100, d_samples=300) == (7, 2000)


def test_early_stopping_stops_after_patience(data):
    # lr so small nothing improves beyond noise; patience 1 after 1 warm-up epoch
    cfg, ctx, _ = make(
        data,
        max_epochs=40,
        early_stopping=EarlyStopping(patience=1, warmup_epochs=1, min_delta=10.0),
    )
    final = loop.run(cfg, ctx())
    assert final["train/epochs"] == 2  # best at epoch 1, one bad epoch → stop
    assert final["train/best_epoch"] == 1


def test_resume_from_checkpoint_continues_where_it_stopped(data, tmp_path):
    cfg, ctx, _ = make(data, max_epochs=4, checkpoint_every=2)
    first = ctx(checkpoint_root=str(tmp_path / "a"))
    full = loop.run(cfg, first)
    # a fresh context that "was killed" after the epoch-2 checkpoint
    resumed = ctx(checkpoint_root=str(tmp_path / "b"))
    ckpts = sorted((tmp_path / "a").iterdir())
    resumed._last_ckpt = str(ckpts[0])
    again = loop.run(cfg, resumed)
    # epochs 1-2 come back from the checkpoint as they were logged (so a driver that missed them
    # before the crash can log them now, once); 3-4 are trained again
    reported = epoch_metrics(resumed)
    assert [m["epoch"] for m in reported] == [1, 2, 3, 4]
    assert again["train/resumed_from_epoch"] == 2
    before = {m["epoch"]: m for m in epoch_metrics(first)}
    for m in reported[:2]:
        assert m["train/loss"] == before[m["epoch"]]["train/loss"]
    assert again["train/samples_seen"] == full["train/samples_seen"]


def test_the_final_evaluation_is_a_hook_given_the_best_weights_the_context_and_the_config(data):
    """The loop imports no evaluation: the hook it is given runs once, after training, on the
    network with the best epoch's weights; its metrics join the final report."""
    cfg, ctx, _ = make(data, "supervised", max_epochs=3)
    c = ctx()
    calls = []

    def hook(net, hook_ctx, hook_cfg):
        weights = {k: v.clone() for k, v in net.state_dict().items()}
        calls.append((weights, hook_ctx, hook_cfg, len(c.reports)))
        return {"probe/moa/seen_compounds/top1": 0.25}

    final = loop.run(cfg, c, final=hook)
    [(weights, hook_ctx, hook_cfg, reports_before)] = calls
    assert hook_ctx is c and hook_cfg is cfg
    assert reports_before == len(c.reports) - 1  # after every epoch report, before the final one
    best = torch.load(Path(c.latest_checkpoint()) / "state.pt", weights_only=True)["best_weights"]
    assert weights.keys() == best.keys()
    assert all(torch.equal(weights[k], best[k]) for k in best)
    assert final["probe/moa/seen_compounds/top1"] == 0.25
    assert c.reports[-1]["probe/moa/seen_compounds/top1"] == 0.25
    assert {"val/best_loss", "train/best_epoch", "compute/flops"} <= set(final)

    plain = loop.run(cfg, ctx())  # no hook: the training totals only
    assert not [k for k in plain if k.startswith("probe/")]
    assert plain.keys() == final.keys() - {"probe/moa/seen_compounds/top1"}


def test_reports_batch_epochs_and_carry_checkpoints_where_due(data):
    """Epochs go out in batches at each due checkpoint and at the end; checkpointed reports say
    so, the last epoch says whether it stopped early, and the final report checkpoints the run
    with every epoch in its log."""
    cfg, ctx, _ = make(data, "supervised", max_epochs=5, checkpoint_every=2, report_interval_s=1e9)
    c = ctx()
    loop.run(cfg, c)
    assert [[m["epoch"] for m in r.get("history", [])] for r in c.reports] == [
        [1, 2],
        [3, 4],
        [5],
        [],
    ]
    assert [r.get("checkpointed") for r in c.reports] == [1.0, 1.0, None, 1.0]
    assert c.reports[2]["train/early_stopped"] == 0.0
    assert c.reports[2]["epoch"] == 5 and c.reports[-1]["final"] == 1.0
    assert ["train/early_stopped" in r for r in c.reports[:2]] == [False, False]
    state = torch.load(Path(c.latest_checkpoint()) / "state.pt", weights_only=True)["state"]
    assert [m["epoch"] for m in state["epoch_log"]] == [1, 2, 3, 4, 5]
    assert state["epoch"] == 5 and state["best_epoch"] >= 1


def test_weight_decay_groups_skip_norms_and_biases(data):
    cfg, _, _ = make(data)
    net, _ = loop.build_network(cfg)
    decay, no_decay = loop.param_groups(net, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    n = sum(p.numel() for p in net.parameters())
    assert n == sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert np.isfinite(n)


def test_bf16_autocast_stays_within_tolerance_of_fp32(data):
    """Same data, seed and steps: the last epoch's loss within 10 % and the probe's top-1 within
    0.1 of fp32 (the tolerance bioscale states for bf16 training)."""
    results = {}
    for precision in ("fp32", "bf16"):
        cfg, ctx, _ = make(data, "supervised", precision=precision)
        c = ctx()
        final = loop.run(cfg, c, final=FINAL)
        results[precision] = (epoch_metrics(c)[-1]["train/loss"], final)
    (loss32, f32), (loss16, f16) = results["fp32"], results["bf16"]
    assert loss16 == pytest.approx(loss32, rel=0.10)
    for split in ("seen_compounds", "novel_compounds"):
        key = f"probe/moa/{split}/top1"
        assert abs(f16[key] - f32[key]) <= 0.1


def test_step_numerics_on_cpu():
    import torch

    from bioscale.train.precision import StepNumerics, prepare_layout, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) in {"fp32", "bf16"}
    numerics = StepNumerics(precision="bf16", channels_last=True, device=cpu)
    x = numerics.inputs(torch.randn(2, 5, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with numerics.autocast():
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    conv = prepare_layout(torch.nn.Conv2d(5, 4, 3), True, True, compile_model=False)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


class ScriptedValidation(IBP):
    """IBP whose early-stopping terms follow ``script`` (one ``(ce, invariance, leakage)`` per
    epoch, composed as IBP composes them); training steps are IBP's own."""

    def __init__(self, params, script):
        super().__init__(params)
        self.script = script
        self.epoch = 0
        self._training = True

    def loss_terms(self, model, batch):
        terms = super().loss_terms(model, batch)
        if model.training:
            self._training = True
            return terms
        if self._training:  # the first validation batch of an epoch
            self.epoch, self._training = self.epoch + 1, False
        ce, inv, leak = (torch.tensor(v) for v in self.script[self.epoch - 1])
        return {**terms, "ce": ce, "invariance": inv, "leakage_plate": leak, "loss": ce + inv}


def test_ibp_early_stopping_keeps_the_lowest_ce_epoch_not_the_leakiest(data, monkeypatch):
    """Epoch 2 has the lowest compound CE; epoch 3 a higher CE, but its plate adversary reads the
    plate best (lowest invariance CE, highest leakage), so its ce + invariance is the lowest.
    The kept epoch is 2 (``val/loss`` = CE); on the total it would be the leaky epoch 3."""
    script = [(2.0, 2.0, 0.5), (1.0, 1.5, 0.4), (1.4, 0.3, 0.95)]
    params = {"invariance": ["plate"]}
    cfg, ctx, _ = make(data, "ibp", params, max_epochs=3)
    net, real = loop.build_network(cfg)
    assert real.selection_term() == "ce"
    scripted = ScriptedValidation(real.params, script)
    monkeypatch.setattr(loop, "build_network", lambda _cfg: (net, scripted))
    c = ctx()
    final = loop.run(cfg, c)
    epochs = epoch_metrics(c)
    assert [m["val/loss"] for m in epochs] == pytest.approx([ce for ce, _, _ in script])
    assert [m["val/invariance"] for m in epochs] == pytest.approx([inv for _, inv, _ in script])
    assert [m["val/leakage_plate"] for m in epochs] == pytest.approx([lk for *_, lk in script])
    assert final["train/best_epoch"] == 2
    assert final["val/best_loss"] == pytest.approx(1.0)


def test_ibp_invariance_validation_logs_ce_as_val_loss_and_the_adversary_beside(data):
    cfg, ctx, _ = make(data, "ibp", {"invariance": ["plate"]}, max_epochs=2)
    c = ctx()
    loop.run(cfg, c)
    for m in epoch_metrics(c):
        assert m["val/loss"] == m["val/ce"]
        assert m["val/invariance"] > 0 and 0.0 <= m["val/leakage_plate"] <= 1.0
        assert {"train/invariance", "train/leakage_plate"} <= set(m)


class PoisonedContext(LocalContext):
    """Serves NaN in one sample of one training batch (``poison``: 0-based epoch, 1-based batch)."""

    def __init__(self, *, poison, **kw):
        super().__init__(**kw)
        self.poison = poison
        self.served = 0

    def train_batches(self, epoch):
        for step, batch in enumerate(super().train_batches(epoch), start=1):
            self.served += 1
            if (epoch, step) == self.poison:
                batch["x"] = batch["x"].clone()
                batch["x"][0, 0] = float("nan")
            yield batch


def test_non_finite_loss_fails_the_trial_at_once_naming_epoch_step_and_terms(data):
    cfg, ctx, n_train = make(data, "ibp", max_epochs=4)
    c = ctx(PoisonedContext, poison=(1, 3))
    with pytest.raises(TrainingError, match=r"epoch 2, step 3 \(ce=nan, loss=nan\)"):
        loop.run(cfg, c)
    batches_per_epoch = -(-n_train // 64)
    assert c.served == batches_per_epoch + 3  # no step after the bad one, no probe
    assert not any("final" in r for r in c.reports)
    assert issubclass(TrainingError, BioscaleError)


def test_the_loop_applies_the_configured_weight_decay_mode_once(data, tmp_path):
    """The resolved ``weight_decay_mode`` reaches the optimiser the loop checkpoints."""
    groups = {}
    for mode in ("coupled", "decoupled"):
        cfg, ctx, _ = make(data, "supervised", max_epochs=1, weight_decay_mode=mode)
        c = ctx(checkpoint_root=str(tmp_path / mode))
        loop.run(cfg, c)
        state = torch.load(Path(c.latest_checkpoint()) / "state.pt", weights_only=True)
        decayed, _ = state["optimizer"]["param_groups"]
        groups[mode] = (decayed["weight_decay"], decayed["l2_penalty"])
    assert groups == {"coupled": (0.0, 1e-6), "decoupled": (1e-6, 0.0)}


def test_the_deferred_finite_check_of_the_gpu_path_names_the_step_one_step_late():
    from bioscale.train.step import FiniteLossGuard

    def terms(loss):
        return {"loss": torch.tensor(loss), "ce": torch.tensor(1.0)}

    guard = FiniteLossGuard(torch.device("cpu"), deferred=True)
    guard.check(1, 1, terms(1.0))
    guard.check(1, 2, terms(float("inf")))  # queued: read when step 3 is queued
    with pytest.raises(TrainingError, match=r"epoch 1, step 2 \(loss=inf\)"):
        guard.check(1, 3, terms(1.0))
    last = FiniteLossGuard(torch.device("cpu"), deferred=True)
    last.check(3, 7, terms(float("nan")))
    with pytest.raises(TrainingError, match=r"epoch 3, step 7 \(loss=nan\)"):
        last.flush()  # an epoch's last step
