"""Candidate trials of a study for ``bioscale study suggest``: on each data-scaling curve (one
objective at one rung), the diets between the measured ones (geometric midpoints of
``replicates``), half the smallest and, below the full pool, twice the largest (one step beyond
the study's axis), and one more seed at each measured diet (a grid entry with its own ``seeds``:
repeated seeds give a curve its seed-to-seed noise). A candidate's D is the curve's largest measured diet scaled by the
``replicates`` ratio (diets keep ⌈f·n⌉ samples per compound: proportional up to rounding), and
its FLOPs are that D × the curve's measured ``flops_per_sample`` × ``epochs`` (the plan's
planned samples)."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

from bioscale.config import to_mapping
from bioscale.data.diets import Diet
from bioscale.scaling.fit import FitResult
from bioscale.scaling.suggest import Candidate
from bioscale.study.spec import ObjectiveSpec, StudySpec


def _diets(spec: StudySpec) -> dict[str, Diet]:
    """Diet label (as trials log it, also with the axes an objective ignores zeroed) → diet."""
    out: dict[str, Diet] = {}
    for grid in spec.grids:
        for d in grid.diet:
            for v in (d, replace(d, extra=0), replace(d, controls=False)):
                out.setdefault(v.label(), d)
            out.setdefault(replace(d, extra=0, controls=False).label(), d)
    return out


def _objectives(spec: StudySpec) -> dict[str, ObjectiveSpec]:
    return {o.label(): o for grid in spec.grids for o in grid.objective}


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def study_candidates(
    spec: StudySpec, rows: list[dict[str, Any]], fits: list[FitResult]
) -> list[Candidate]:
    """Candidates on every fit along D whose group names an objective and a rung of the study."""
    diets, objectives = _diets(spec), _objectives(spec)
    out: list[Candidate] = []
    for i, fit in enumerate(fits):
        obj, rung = fit.group.get("objective"), fit.group.get("rung")
        if fit.axis != ["D"] or obj not in objectives or rung is None:
            continue
        mine = [
            r
            for r in rows
            if r.get("objective") == obj
            and r.get("rung") == rung
            and r.get("diet") in diets
            and isinstance(r.get("D_samples"), int | float)
        ]
        per_sample = sorted(
            float(r["flops_per_sample"]) * float(r["epochs"])
            for r in mine
            if isinstance(r.get("flops_per_sample"), int | float) and r["flops_per_sample"] > 0
        )
        if not mine or not per_sample:
            continue
        flops_per_d = per_sample[len(per_sample) // 2]  # FLOPs per sample of D, whole training
        base = max(mine, key=lambda r: r["D_samples"])
        base_diet = diets[base["diet"]]
        reps = sorted({diets[r["diet"]].replicates for r in mine})
        new = [math.sqrt(a * b) for a, b in itertools.pairwise(reps)]
        new.append(reps[0] / 2)
        if reps[-1] < 1.0:
            new.append(min(1.0, reps[-1] * 2))
        taken = _seeds_taken(spec, mine)
        trial = {"rung": rung, "objective": _objective_mapping(objectives[obj])}
        seed = next(s for s in itertools.count() if s not in taken)
        for rep in reps:  # another seed at a measured diet
            at = [r for r in mine if diets[r["diet"]].replicates == rep]
            d = float(sorted(r["D_samples"] for r in at)[len(at) // 2])
            out.append(_candidate(i, d, flops_per_d, trial, diets[at[0]["diet"]], seed=seed))
        for rep in sorted({_round(r) for r in new} - set(reps)):
            d = float(base["D_samples"]) * rep / base_diet.replicates
            out.append(_candidate(i, d, flops_per_d, trial, replace(base_diet, replicates=rep)))
    return out


def _candidate(
    curve: int, d: float, flops_per_d: float, trial: dict[str, Any], diet: Diet, **extra: Any
) -> Candidate:
    """A candidate trial of ``trial``'s rung and objective on ``diet`` (D samples)."""
    return Candidate(
        curve=curve,
        at={"D": d},
        flops=d * flops_per_d,
        trial={**trial, "diet": _diet_mapping(diet), **extra},
    )


def _seeds_taken(spec: StudySpec, rows: list[dict[str, Any]]) -> set[int]:
    """Seeds a new seed must not reuse: the study's, every grid's, and those its trials ran."""
    taken = set(spec.seeds)
    for grid in spec.grids:
        taken |= set(grid.seeds or [])
    for r in rows:
        if isinstance(r.get("seed"), int | float) and not isinstance(r.get("seed"), bool):
            taken.add(int(r["seed"]))
    return taken


def _diet_mapping(diet: Diet) -> dict[str, Any]:
    """The diet's YAML: only the fields that differ from the defaults."""
    default = to_mapping(Diet())
    return {k: v for k, v in to_mapping(diet).items() if v != default[k] or k == "replicates"}


def _objective_mapping(obj: ObjectiveSpec) -> str | dict[str, Any]:
    return obj.name if not obj.params else {"name": obj.name, "params": dict(obj.params)}
