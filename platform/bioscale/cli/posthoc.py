"""``bioscale evaluate`` and ``bioscale visualize``: tools on a study's finished trials
(``bioscale.study.posthoc``)."""

from __future__ import annotations

import argparse

from bioscale.cli.common import load_spec, out_dir, ray_options


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Re-evaluate finished trials from their final checkpoints into their own MLflow runs."""
    from bioscale.study.posthoc import reevaluate_study, with_eval_tasks

    spec = load_spec(args.study)
    if args.task:  # tasks to (re)compute now, instead of the study's eval: list
        spec = with_eval_tasks(spec, args.task, where=f"{args.study} with --task")
    reevaluate_study(
        spec,
        out_dir(args, spec),
        run_ids=args.run,
        address=args.address,
        num_cpus=args.num_cpus,
        verbose=args.verbose,
        actors=args.actors,
    )
    return 0


def cmd_visualize(args: argparse.Namespace) -> int:
    """MACO feature visualisations of a finished trial's class logits, logged to its run."""
    from bioscale.eval.maco import MacoConfig
    from bioscale.study.posthoc import visualize_run

    spec = load_spec(args.study)
    given = {
        "steps": args.steps,
        "lr": args.lr,
        "image_size": args.image_size,
        "crops": args.crops,
        "seed": args.seed,
    }
    cfg = MacoConfig(**{k: v for k, v in given.items() if v is not None})
    result = visualize_run(
        spec,
        out_dir(args, spec),
        args.run,
        cfg=cfg,
        targets=args.target,
        images=args.images,
        device=args.device,
    )
    print(f"{len(result.targets)} visualisation(s) in {result.folder}")
    return 0


def add_commands(sub) -> None:
    """``evaluate``, ``visualize``."""
    p_ev = sub.add_parser(
        "evaluate",
        help="recompute or add evaluation metrics of finished trials from their checkpoints",
    )
    p_ev.add_argument("study", help="study YAML the trials ran with")
    p_ev.add_argument("--out", default=None, help="output folder (default: bioscale-out/<name>)")
    p_ev.add_argument(
        "--run", action="append", help="MLflow run id of a trial (repeatable; default: all)"
    )
    p_ev.add_argument(
        "--task", action="append", help="evaluation task (repeatable; default: the study's eval)"
    )
    p_ev.add_argument("--actors", type=int, default=1, help="embedding actors (Ray Data pool)")
    ray_options(p_ev)
    p_ev.set_defaults(func=cmd_evaluate)

    p_vis = sub.add_parser(
        "visualize",
        help="MACO feature visualisations of a finished trial's class logits (PNGs, logged to "
        "its MLflow run; `study report` shows them)",
    )
    p_vis.add_argument("study", help="study YAML the trial ran with")
    p_vis.add_argument("--run", required=True, metavar="RUN_ID", help="MLflow run id of the trial")
    p_vis.add_argument(
        "--target",
        action="extend",
        nargs="+",
        metavar="CLASS",
        help="class label or index of the classifier head (repeatable; default: the first 4)",
    )
    # None: MacoConfig's published defaults (1000 steps, 256 px, 6 crops, NAdam lr 1.0, seed 0)
    p_vis.add_argument(
        "--steps", type=int, default=None, metavar="N", help="optimisation steps (1000)"
    )
    p_vis.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="S",
        help="side of the optimised image in px (256)",
    )
    p_vis.add_argument(
        "--crops", type=int, default=None, metavar="K", help="random crops per step (6)"
    )
    p_vis.add_argument(
        "--lr", type=float, default=None, metavar="X", help="NAdam learning rate (1.0)"
    )
    p_vis.add_argument("--seed", type=int, default=None, help="seed of phase, crops, noise (0)")
    p_vis.add_argument(
        "--images",
        type=int,
        default=64,
        metavar="M",
        help="manifest images the magnitude spectrum is averaged over (default 64)",
    )
    p_vis.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if present"
    )
    p_vis.add_argument("--out", default=None, help="output folder (default: bioscale-out/<name>)")
    p_vis.set_defaults(func=cmd_visualize)
