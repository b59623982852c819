"""A trial's final evaluation: the hook the study wires into the training loop.

``final_metrics`` (a ``bioscale.train.loop.FinalEvaluation``) runs on rank 0 after training, on
the network with its best weights restored: it embeds the fixed probe sets with the frozen
backbone (with ``probe.selection: search`` also every searched layer, in the same pass), runs the
evaluation suite of ``FinalConfig.probe.tasks`` (``bioscale.eval.tasks.evaluate``), adds the layer-search
curves as the ``layer_search.json`` entry, then the study's alignment evaluations
(``bioscale.eval.trial_alignment``) on the probe-test images. Data whose question is answered by
the network's own read-out (FeatureTracker videos: does the target end on the marker) is scored
by ``bioscale.eval.tracking`` on the same probe set instead of (or beside) the probes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bioscale.eval.config import ProbeConfig
from bioscale.eval.layer_search import CURVES_ARTIFACT, layer_columns, layer_curves, layers_of
from bioscale.eval.tasks import evaluate
from bioscale.eval.tracking import TrackingEval, evaluate_tracking
from bioscale.eval.trial_alignment import AlignmentConfig, run_alignment

if TYPE_CHECKING:
    import torch

    from bioscale.train.config import LoopConfig
    from bioscale.train.context import TrainContext
    from bioscale.train.step import Network


def embed(
    backbone: torch.nn.Module, batches: Iterable[dict], device: torch.device, layers: Any = None
) -> dict[str, np.ndarray]:
    """Frozen embeddings ``emb`` of every batch, with the batch's other columns passed through.

    ``layers`` (``all`` or layer names / indices, ``bioscale.eval.layers``): also the pooled
    embedding of each of those layers, from the same forward pass, as columns
    ``layer:<index>/<count>:<name>`` (``bioscale.eval.layer_search.layer_columns``).
    """
    import torch

    from bioscale.eval.layers import LayerExtractor

    backbone.eval()
    out: dict[str, list[np.ndarray]] = {}
    columns = layer_columns(backbone, layers) if layers is not None else {}
    with (
        torch.no_grad(),
        LayerExtractor(backbone, layers) if layers is not None else nullcontext() as extractor,
    ):
        for batch in batches:
            x = batch["x"].to(device)
            if extractor is None:
                out.setdefault("emb", []).append(backbone(x).float().cpu().numpy())
            else:
                for name, emb in extractor(x).items():
                    out.setdefault(columns[name], []).append(emb.cpu().numpy())
                out.setdefault("emb", []).append(extractor.embedding.cpu().numpy())
            for k, v in batch.items():
                if k != "x":
                    out.setdefault(k, []).append(v.cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


@dataclass(frozen=True, kw_only=True)
class FinalConfig:
    """What a trial's final evaluation runs, resolved by the study's plan (not part of the loop's
    config: evaluation settings are not part of a trial's identity, and ``train`` knows nothing of
    evaluation). ``alignment``'s folders are absolute (workers run elsewhere)."""

    probe: ProbeConfig = field(default_factory=ProbeConfig)
    alignment: AlignmentConfig | None = None
    #: the network's own tracking answers on the probe set's test videos, per condition (data
    #: kinds whose ``head_evaluation`` asks for it); ``None``: none
    tracking: TrackingEval | None = None


def final_metrics(
    net: Network, ctx: TrainContext, cfg: LoopConfig, final: FinalConfig | None = None
) -> dict[str, Any]:
    """Probe metrics (and, with layer search, the ``layer_search.json`` curves) of the frozen
    backbone on the context's ``probe`` set, then ``final.alignment``'s metrics on its
    ``held_out`` set (the probe-test images). Bind ``final`` (``functools.partial``) to wire it
    into ``bioscale.train.loop.run``."""
    final = final or FinalConfig()
    out: dict[str, Any] = {}
    if final.tracking is not None:  # the trained read-out on the held-out videos
        out |= evaluate_tracking(net, ctx.eval_batches("probe"), ctx.device, final.tracking)
    if final.probe.tasks:
        search = final.probe.selection == "search"
        probe_data = embed(
            net.backbone,
            ctx.eval_batches("probe"),
            ctx.device,
            layers=final.probe.layers if search else None,
        )
        # normalised against the control wells, then every task of the study's ``eval:``
        out |= evaluate(probe_data, final.probe)
        if search:  # the per-layer validation curves: a JSON artifact of the trial's run
            out[CURVES_ARTIFACT] = json.dumps(layer_curves(layers_of(probe_data), out))
    if final.alignment is not None:  # saliency/adversarial read the probe-test images
        out |= run_alignment(
            net,
            final.alignment,
            held_out=lambda: ctx.eval_batches("held_out"),
            device=ctx.device,
            image_size=cfg.input_shape[-1],
        )
    return out
