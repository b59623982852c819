"""What every command group shares: the study file, its output folder, the Ray options."""

from __future__ import annotations

import argparse
from pathlib import Path


def default_out(name: str) -> Path:
    """``bioscale-out/<study name>``: where a study's commands read and write without ``--out``."""
    return Path("bioscale-out") / name


def out_dir(args: argparse.Namespace, spec) -> Path:
    """``--out``, else ``bioscale-out/<study name>`` (relative: resolved where a command needs it)."""
    return Path(args.out or default_out(spec.name))


def load_spec(path: str):
    """The ``StudySpec`` of a study YAML (validated once, errors naming the key)."""
    from bioscale.study.spec import StudySpec

    return StudySpec.load(path)


def ray_options(p: argparse.ArgumentParser) -> None:
    """``--address``, ``--num-cpus`` and ``--verbose`` of a command that starts or joins Ray."""
    p.add_argument(
        "--address", default=None, help="Ray cluster to join (default: start a local instance)"
    )
    p.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="logical CPUs of the local Ray instance (default: max(4, 2 × cores))",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="show Ray's own logs and progress bars"
    )
