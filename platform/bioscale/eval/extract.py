"""Embedding extraction as a Ray Data job, and re-evaluation of a finished trial from its checkpoint.

``embed_dataset`` runs the frozen backbone in a ``map_batches`` actor pool (each actor loads the
checkpoint once; ``batch_size`` rows per call), so evaluation scales like training. The embedded
rows keep their code columns; sites and crops are averaged to wells by the evaluation suite
(``bioscale.eval.tasks.to_wells``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: What a trial checkpoint folder holds (written by the training loop).
STATE_FILE = "state.pt"


def trial_folder(out_dir: str | Path, trial_key: str, storage: str | None = None) -> str:
    """A trial's Ray Train folder (named by the runner): under the study's ``storage:`` (a path
    or an ``s3://``/``gs://`` URI) when it has one, else under ``<out>/ray_results``."""
    root = storage.rstrip("/") if storage else str(Path(out_dir) / "ray_results")
    return f"{root}/trial-{trial_key[:16]}"


def final_checkpoint(folder: str | Path, cache: str | Path | None = None) -> Path:
    """The last ``checkpoint_*`` folder of a trial (the final report's: best weights restored),
    as a local folder: one in object storage is downloaded into ``cache`` (a temporary folder
    by default) first.

    Raises:
        FileNotFoundError: naming the folder, when it holds no checkpoint.
    """
    import pyarrow.fs as pafs

    location = str(folder)
    fs, root = pafs.FileSystem.from_uri(location if "://" in location else str(Path(location)))
    info = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    names = sorted(i.base_name for i in info if i.type == pafs.FileType.Directory)
    found = [
        n
        for n in names
        if n.startswith("checkpoint_")
        and fs.get_file_info(f"{root}/{n}/{STATE_FILE}").type == pafs.FileType.File
    ]
    if not found:
        raise FileNotFoundError(
            f"no checkpoint_*/{STATE_FILE} under {location}: the trial's Ray Train folder is "
            "missing (another --out or storage:?) or the trial never reported its final checkpoint"
        )
    if "://" not in location:
        return Path(root) / found[-1]
    import tempfile

    local = Path(cache or tempfile.mkdtemp(prefix="bioscale-ckpt-")) / found[-1]
    local.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(
        f"{root}/{found[-1]}/{STATE_FILE}",
        str(local / STATE_FILE),
        source_filesystem=fs,
        destination_filesystem=pafs.LocalFileSystem(),
    )
    return local


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


def reevaluate(
    tracker: Any,
    run_id: str,
    *,
    probe_dataset,
    loop_config: Any,
    checkpoint: str | Path,
    cfg: Any,
    pool_size: int = 1,
    num_cpus: float = 1.0,
) -> dict[str, float]:
    """Embed a finished trial's probe rows from its checkpoint, run ``cfg.tasks`` and log the
    metrics into the *same* MLflow run (at the step of its final metrics; no new run).

    Args:
        tracker: a ``bioscale.study.tracking.Tracker`` (``client``, ``log_metrics``).
        run_id: the trial's MLflow run.
        probe_dataset: Ray Dataset of the probe rows (``x`` + code columns).
        loop_config: the trial's ``LoopConfig`` (rebuilds the network).
        checkpoint: the trial's final checkpoint folder.
        cfg: ``ProbeConfig`` with the tasks to run.
        pool_size: embedding actors.
        num_cpus: CPUs per embedding actor.
    """
    import json

    from bioscale.eval.layer_search import CURVES_ARTIFACT, layer_curves, layers_of
    from bioscale.eval.tasks import evaluate

    run = tracker.client.get_run(run_id)
    logged = run.data.params.get("probe_selection", "last")  # runs from before layer search
    if logged != cfg.selection:
        raise ValueError(
            f"run {run_id} was probed with probe.selection {logged!r}; re-evaluating it with "
            f"{cfg.selection!r} would log one kind of metric under the other's param. Run the "
            "study with the new selection instead (a new trial key)."
        )
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
    step = int(run.data.metrics.get("train/epochs", 0))
    tracker.log_metrics(run_id, metrics, step=step)
    if search:
        curves = layer_curves(layers_of(columns), metrics)
        tracker.log_text(run_id, json.dumps(curves), CURVES_ARTIFACT)
    return metrics
