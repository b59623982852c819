"""``bioscale demo``: the packaged demo study, end to end, on a local Ray instance."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from bioscale.cli.common import ray_options
from bioscale.cli.study import print_where, run_and_report


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from bioscale.study.spec import StudySpec

    t0 = time.perf_counter()
    demo = resources.files("bioscale").joinpath("studies/demo.yaml")
    spec = StudySpec.load(str(demo))
    out = Path(args.out)
    print(f"bioscale demo: {len(spec.grids)} grids of study {spec.name!r} into {out.resolve()}")
    result, analysis = run_and_report(spec, out, args)
    print("\nhow each objective scales:")
    from bioscale.scaling.report import describe_fit

    for fit in analysis.fits:
        print(f"  · [{fit.axis[0]}] {describe_fit(fit, 'MoA top-1 (novel compounds)')}")
    if analysis.comparisons:
        print("objectives compared:")
        for comparison in analysis.comparisons:
            if comparison.get("note"):
                print(f"  · {comparison['note']}")
    print_where(result, analysis)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")
    return 1 if result.failed else 0


def add_commands(sub) -> None:
    """``demo``."""
    demo = sub.add_parser("demo", help="run the embedded demo study end to end")
    demo.add_argument("--out", default="bioscale-demo", help="output folder (default: %(default)s)")
    ray_options(demo)
    demo.set_defaults(func=cmd_demo)
