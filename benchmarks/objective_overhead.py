"""Cost of one training step under each objective, relative to task supervision.

    python benchmarks/objective_overhead.py [--rungs resnet:r18,vit:tiny] [--size 96] [--batch 16]
                                            [--map-fraction 0.75] [--steps 5] [--json]

Same model, batch and optimiser for every objective, in one process; prints steps/s and the ratio
of each objective's step time to ``supervised``. The harmonizer's double backward is the expensive
part: bioscale takes the saliency only for the images that have maps and reuses the CE's forward
pass (target: ≤ 2.5× a CE step on CPU; a naive implementation costs ~2.7–2.8×).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bioscale.models.ladder import get_rung
from bioscale.objectives import registry as objectives
from bioscale.train.loop import Network, param_groups

OBJECTIVES = {"supervised": {}, "ibp": {}, "harmonized": {}}


def step_seconds(
    rung: str, objective_name: str, size: int, batch: int, map_fraction: float, steps: int
) -> float:
    torch.manual_seed(0)
    objective = objectives.build(objective_name, OBJECTIVES[objective_name])
    backbone = objective.prepare_backbone(get_rung(rung).build((3, size, size)))
    net = Network(backbone, objective.build_heads(backbone.embed_dim, {"y": 10}))
    opt = torch.optim.AdamW(param_groups(net, 1e-5), lr=1e-4)
    n_maps = round(map_fraction * batch)
    data = {
        "x": torch.rand(batch, 3, size, size),
        "y": torch.randint(0, 10, (batch,)),
        "map": torch.rand(batch, size, size),
        "has_map": torch.arange(batch) < n_maps,
    }
    times = []
    for i in range(steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        terms = objective.loss_terms(net, data)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]  # median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", default="resnet:r18,vit:tiny")
    parser.add_argument("--size", type=int, default=96, help="crop size in pixels")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--map-fraction", type=float, default=0.75, help="share of the batch with human maps"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for rung in args.rungs.split(","):
        base = None
        for name in OBJECTIVES:
            s = step_seconds(rung, name, args.size, args.batch, args.map_fraction, args.steps)
            base = base or s
            rows.append(
                {
                    "rung": rung,
                    "objective": name,
                    "step_s": s,
                    "steps_per_s": 1.0 / s,
                    "ratio_to_supervised": s / base,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{args.batch} images of {args.size}×{args.size} px per step, "
        f"{args.map_fraction:.0%} with maps, torch threads {torch.get_num_threads()}"
    )
    print(f"{'rung':<12}{'objective':<12}{'steps/s':>9}{'× supervised':>14}")
    for r in rows:
        print(
            f"{r['rung']:<12}{r['objective']:<12}{r['steps_per_s']:>9.2f}"
            f"{r['ratio_to_supervised']:>14.2f}"
        )


if __name__ == "__main__":
    main()
