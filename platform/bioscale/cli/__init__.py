"""The ``bioscale`` command. Thin: one module per command group parses its arguments and calls
the library; heavy imports happen inside each command so ``bioscale --help`` stays instant.

``demo``; ``data`` (synth, import, check, preprocess, baseline, pack); ``study`` (plan, run,
resume, report, suggest); ``posthoc`` (evaluate, visualize: finished trials); ``scaling`` (fit,
forecast, predict, report).
"""

from __future__ import annotations

import argparse
import sys

from bioscale.cli import data, demo, posthoc, scaling, study
from bioscale.errors import BioscaleError

# the plan table, public here before it moved to the library
from bioscale.study.dryrun import format_plan

__all__ = ["build_parser", "format_plan", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bioscale",
        description="Neural scaling studies for biological vision and phenotypic drug discovery "
        "on Ray, tracked in MLflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (demo, data, study, posthoc, scaling):  # the order `bioscale --help` lists
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BioscaleError as err:
        code = getattr(err, "exit_code", 2)  # 130: interrupted (StudyInterrupted)
        print(f"bioscale: {'error: ' if code == 2 else ''}{err}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(
            "bioscale: interrupted; nothing it was doing is complete. Finished trials are in "
            "MLflow and are skipped on re-run; `bioscale study resume` continues a study.",
            file=sys.stderr,
        )
        return 130
