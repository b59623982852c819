"""3D-PC probes (SEEDS §3; arXiv 2406.04138): can a linear readout of frozen, pooled features
answer depth-order and visual-perspective-taking questions?

A task is a folder in ImageFolder layout, ``<task>/<split>/<0|1>/*.png`` with splits ``train``,
``val``, ``test`` and optionally ``human`` (the images people were tested on). The published probe
is BatchNorm1d(d, affine=False) → Dropout(0.3) → Linear(d, 1), trained with binary cross-entropy
and AdamW (lr 5e-5, weight decay 1e-4) for 30 epochs; the epoch with the best validation accuracy
(the first, on ties) is kept and scored on ``test`` (and ``human``). The test split never
influences the choice.

Metrics: ``probe/3dpc_<task>/test/acc``, ``probe/3dpc_<task>/human/acc`` (when present),
``probe/3dpc_<task>/val/acc``, ``probe/3dpc_<task>/best_epoch``, ``probe/3dpc_<task>/n_train``,
``probe/3dpc_<task>/seconds``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bioscale.errors import BioscaleError, ConfigError

SPLITS_3DPC = ("train", "val", "test", "human")
REQUIRED_SPLITS = ("train", "val", "test")
IMAGE_EXTS = (".png", ".jpg", ".jpeg")


class ThreeDPCDataError(BioscaleError, ValueError):
    """A 3D-PC task folder does not follow ``<split>/<0|1>/*.png``."""


@dataclass(frozen=True, kw_only=True)
class ThreeDPCConfig:
    """Probe settings (published defaults; ``batch_size`` is not given by the paper).

    Attributes:
        epochs: training epochs of the probe.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        dropout: dropout before the linear layer.
        batch_size: probe mini-batch size.
        image_size: images are resized to this side before the backbone.
        embed_batch_size: images per backbone call.
        seed: seed of the probe's initialisation, shuffling and dropout.
    """

    epochs: int = 30
    lr: float = 5e-5
    weight_decay: float = 1e-4
    dropout: float = 0.3
    batch_size: int = 32
    image_size: int = 64
    embed_batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.embed_batch_size < 1:
            raise ConfigError("threedpc: epochs, batch_size and embed_batch_size must be >= 1")
        if self.lr <= 0 or not 0 <= self.dropout < 1:
            raise ConfigError("threedpc: lr must be > 0 and dropout in [0, 1)")


def read_split(task_dir: str | Path, split: str) -> tuple[list[Path], np.ndarray]:
    """Image paths and (n,) int64 labels of ``<task_dir>/<split>/<0|1>/``.

    Raises:
        ThreeDPCDataError: naming the folder that is missing or empty.
    """
    root = Path(task_dir) / split
    paths, labels = [], []
    for label in (0, 1):
        folder = root / str(label)
        if not folder.is_dir():
            raise ThreeDPCDataError(
                f"{folder} is missing: a 3D-PC task needs <split>/0/ and <split>/1/ image folders"
            )
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not found:
            raise ThreeDPCDataError(f"{folder} holds no PNG/JPEG images")
        paths += found
        labels += [label] * len(found)
    return paths, np.asarray(labels, dtype=np.int64)


def task_splits(task_dir: str | Path) -> tuple[str, ...]:
    """The splits present in a task folder (train, val and test are required)."""
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise ThreeDPCDataError(f"3D-PC task folder {task_dir} does not exist")
    missing = [s for s in REQUIRED_SPLITS if not (task_dir / s).is_dir()]
    if missing:
        raise ThreeDPCDataError(
            f"{task_dir} lacks split folder(s) {missing}: expected {list(REQUIRED_SPLITS)} "
            "(+ optional human), each with 0/ and 1/"
        )
    return tuple(s for s in SPLITS_3DPC if (task_dir / s).is_dir())


def embed_split(
    embed: Callable, paths: list[Path], *, size: int, batch_size: int, device: str = "cpu"
) -> np.ndarray:
    """(n, d) float32 pooled features: ``embed`` maps a (B, 3, size, size) tensor in [0, 1] to
    (B, d) (a bioscale backbone with ``num_classes=0`` does)."""
    import torch

    from bioscale.data.natural import load_image

    out = []
    with torch.no_grad():
        for i in range(0, len(paths), batch_size):
            x = np.stack([load_image(str(p), size) for p in paths[i : i + batch_size]])
            z = embed(torch.as_tensor(x, device=device))
            out.append(z.reshape(len(x), -1).float().cpu().numpy())
    return np.concatenate(out)


def _accuracy(probe, z, y) -> float:
    import torch

    probe.eval()
    with torch.no_grad():
        pred = probe(torch.as_tensor(z)).squeeze(1) > 0
    return float((pred.numpy() == y.astype(bool)).mean())


def train_probe(
    features: dict[str, tuple[np.ndarray, np.ndarray]], cfg: ThreeDPCConfig | None = None
) -> dict[str, float]:
    """Fit the published probe on ``features["train"]`` and score the best-validation epoch.

    Args:
        features: split → ((n, d) features, (n,) 0/1 labels); needs train, val, test.
        cfg: probe settings.

    Returns:
        ``{"<split>/acc": .., "best_epoch": ..}`` for val, test and human (when given).
    """
    import torch
    from torch import nn

    cfg = cfg or ThreeDPCConfig()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    z_train, y_train = features["train"]
    d = z_train.shape[1]
    probe = nn.Sequential(nn.BatchNorm1d(d, affine=False), nn.Dropout(cfg.dropout), nn.Linear(d, 1))
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    zt = torch.as_tensor(z_train, dtype=torch.float32)
    yt = torch.as_tensor(y_train, dtype=torch.float32)
    z_val, y_val = features["val"]
    z_val = np.asarray(z_val, dtype=np.float32)
    best_acc, best_epoch, best_state = -1.0, 0, None
    for epoch in range(1, cfg.epochs + 1):
        probe.train()
        order = torch.randperm(len(zt), generator=gen)
        for i in range(0, len(zt), cfg.batch_size):
            rows = order[i : i + cfg.batch_size]
            if len(rows) < 2:  # BatchNorm needs two rows in training mode
                continue
            opt.zero_grad()
            loss = loss_fn(probe(zt[rows]).squeeze(1), yt[rows])
            loss.backward()
            opt.step()
        acc = _accuracy(probe, z_val, y_val)
        if acc > best_acc:
            best_acc, best_epoch, best_state = acc, epoch, copy.deepcopy(probe.state_dict())
    probe.load_state_dict(best_state)
    out = {"val/acc": best_acc, "best_epoch": float(best_epoch)}
    for split in ("test", "human"):
        if split in features:
            z, y = features[split]
            out[f"{split}/acc"] = _accuracy(probe, np.asarray(z, dtype=np.float32), y)
    return out


def evaluate_3dpc(
    embed: Callable,
    task_dir: str | Path,
    *,
    task: str | None = None,
    cfg: ThreeDPCConfig | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """Embed every split of a task folder with the frozen ``embed`` and run the probe.

    Args:
        embed: (B, 3, H, W) tensor in [0, 1] → (B, d) pooled features, run without gradients.
        task_dir: ``<task>/`` holding ``train``, ``val``, ``test`` (+ ``human``).
        task: name in the metric keys (default: the folder's name), e.g. ``depth``.
        cfg: probe settings.
        device: where ``embed`` runs.
    """
    cfg = cfg or ThreeDPCConfig()
    start = time.perf_counter()
    task = task or Path(task_dir).name
    feats = {}
    for split in task_splits(task_dir):
        paths, labels = read_split(task_dir, split)
        z = embed_split(
            embed, paths, size=cfg.image_size, batch_size=cfg.embed_batch_size, device=device
        )
        feats[split] = (z, labels)
    scores = train_probe(feats, cfg)
    prefix = f"probe/3dpc_{task}"
    out = {f"{prefix}/{k}": v for k, v in scores.items()}
    out[f"{prefix}/n_train"] = float(len(feats["train"][1]))
    out[f"{prefix}/seconds"] = time.perf_counter() - start
    return out
