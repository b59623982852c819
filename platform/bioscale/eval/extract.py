"""Embedding extraction as a Ray Data job, and the evaluation suite on a checkpoint's embeddings.

``embed_dataset`` runs the frozen backbone in a ``map_batches`` actor pool (each actor loads the
checkpoint once; ``batch_size`` rows per call), so evaluation scales like training. The embedded
rows keep their code columns; sites and crops are averaged to wells by the evaluation suite
(``bioscale.eval.tasks.to_wells``). Finding a finished trial's checkpoint and logging its
re-evaluation is ``bioscale.study.posthoc``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: What a trial checkpoint folder holds (written by the training loop).
STATE_FILE = "state.pt"


def load_weights(checkpoint: str | Path) -> dict[str, Any]:
    """The model state dict of a checkpoint, loaded safely (``weights_only=True``: tensors and
    plain containers only, no code runs)."""
    import torch

    state = torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=True)
    return state["model"]


class BackboneEmbedder:
    """A Ray Data actor: builds the trial's network once, loads its weights, embeds batches
    (``emb``, and with ``layers`` each of those layers' pooled embedding from the same pass,
    ``bioscale.eval.layer_search.layer_columns``)."""

    def __init__(
        self, loop_config: Any, checkpoint: str, device: str = "cpu", layers: Any = None
    ) -> None:
        import torch

        from bioscale.eval.layer_search import layer_columns
        from bioscale.eval.layers import LayerExtractor
        from bioscale.train.loop import build_network

        net, _ = build_network(loop_config)
        net.load_state_dict(load_weights(checkpoint))
        self.device = torch.device(device)
        self.backbone = net.backbone.to(self.device).eval()
        self.columns = layer_columns(self.backbone, layers) if layers is not None else {}
        self.extractor = LayerExtractor(self.backbone, layers) if layers is not None else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        out = {k: v for k, v in batch.items() if k not in ("x", "map", "has_map")}
        with torch.no_grad():
            x = torch.as_tensor(np.ascontiguousarray(batch["x"]), device=self.device)
            if self.extractor is None:
                out["emb"] = self.backbone(x).float().cpu().numpy()  # (B, d)
            else:
                for name, emb in self.extractor(x).items():
                    out[self.columns[name]] = emb.cpu().numpy()
                out["emb"] = self.extractor.embedding.cpu().numpy()
        return out


def embed_dataset(
    ds,
    *,
    loop_config: Any,
    checkpoint: str | Path,
    batch_size: int,
    pool_size: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    layers: Any = None,
) -> dict[str, np.ndarray]:
    """Embed every row of a Ray Dataset (``x`` plus int64 code columns) with a trial's frozen
    backbone in an actor pool of ``pool_size`` actors; returns ``{"emb": (n, d), <codes>: (n,)}``
    plus, with ``layers`` (layer search), one column per layer."""
    import ray.data

    embedded = ds.map_batches(
        BackboneEmbedder,
        fn_constructor_kwargs={
            "loop_config": loop_config,
            "checkpoint": str(checkpoint),
            "device": "cuda" if num_gpus > 0 else "cpu",
            "layers": layers,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool_size),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
    parts: dict[str, list[np.ndarray]] = {}
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        for k, v in batch.items():
            parts.setdefault(k, []).append(np.asarray(v))
    if not parts:
        raise ValueError("the probe dataset is empty: nothing to embed")
    return {k: np.concatenate(v) for k, v in parts.items()}


def evaluate_checkpoint(
    probe_dataset,
    *,
    loop_config: Any,
    checkpoint: str | Path,
    cfg: Any,
    pool_size: int = 1,
    num_cpus: float = 1.0,
) -> tuple[dict[str, float], dict[str, Any] | None]:
    """Embed the probe rows with a trial's frozen backbone from ``checkpoint`` and run
    ``cfg.tasks``; with ``cfg.selection == "search"`` every layer of ``cfg.layers`` is embedded
    in the same pass and probed.

    Args:
        probe_dataset: Ray Dataset of the probe rows (``x`` + code columns).
        loop_config: the trial's ``LoopConfig`` (rebuilds the network).
        checkpoint: the trial's checkpoint folder.
        cfg: ``ProbeConfig``.
        pool_size: embedding actors.
        num_cpus: CPUs per embedding actor.

    Returns:
        The metrics, and the per-layer curves (``bioscale.eval.layer_search.layer_curves``) of a
        layer search, else ``None``.
    """
    from bioscale.eval.layer_search import layer_curves, layers_of
    from bioscale.eval.tasks import evaluate

    search = cfg.selection == "search"
    columns = embed_dataset(
        probe_dataset,
        loop_config=loop_config,
        checkpoint=checkpoint,
        batch_size=cfg.embed_batch_size,
        pool_size=pool_size,
        num_cpus=num_cpus,
        layers=cfg.layers if search else None,
    )
    metrics = evaluate(columns, cfg)
    return metrics, (layer_curves(layers_of(columns), metrics) if search else None)
