"""The dry run before compute (``bioscale study plan``): every planned trial with its N, D,
FLOPs and key, the resources per trial and the total compute; against a Ray cluster, how many
trials fit at once and the GPU-hours against the study's ``budget:``. Nothing here trains or
starts Ray."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bioscale.data import kinds
from bioscale.errors import BioscaleError


def dry_run(
    spec,
    out_dir: str | Path,
    *,
    address: str | None = None,
    budget: float | None = None,
    proceed: bool = False,
    echo: Callable[[str], None] = print,
):
    """Plan ``spec`` against its manifest and show the plan (``echo``, a line or block at a
    time), then what fits the cluster at ``address`` and the compute against the budget.

    Args:
        spec: the ``StudySpec``.
        out_dir: the study's output folder (checked writable; a synthetic screen is generated
            into it once).
        address: a Ray cluster whose nodes the resources are checked against.
        budget: a GPU-hour cap that overrides the study's ``budget:``.
        proceed: accept a study over its GPU-hour budget.

    Returns:
        The ``StudyPlan``.

    Raises:
        BioscaleError: an unwritable location, an unreachable cluster, a study that does not
            fit the cluster, or one over its budget without ``proceed``.
    """
    from bioscale.study.plan import plan
    from bioscale.study.runner import check_locations, ensure_manifest

    out = Path(out_dir)
    check_locations(spec, out)
    if address:  # an unreachable cluster is said before the plan's work, not after
        from bioscale.study.capacity import check_ray_address

        check_ray_address(address)
    study_plan = plan(spec, ensure_manifest(spec, out))
    echo(format_plan(study_plan))
    check_capacity(spec, study_plan, address=address, budget=budget, proceed=proceed, echo=echo)
    return study_plan


def check_capacity(
    spec,
    study_plan,
    *,
    address: str | None = None,
    budget: float | None = None,
    proceed: bool = False,
    echo: Callable[[str], None] = print,
) -> None:
    """What fits the cluster at ``address`` (if given) and the plan's GPU-hours against
    ``budget`` (GPU-hours; default the study's ``budget:``).

    Raises:
        BioscaleError: naming each problem, when one trial does not fit the cluster.
        BudgetError: over budget without ``proceed``.
    """
    from bioscale.study import capacity

    cluster = capacity.read_cluster(address) if address else None
    fit = (
        capacity.check_fit(spec.resources, cluster, streaming=kinds.get(spec.data.kind).streams)
        if cluster
        else None
    )
    if cluster is not None and fit is not None:
        cpus = sum(n.cpus for n in cluster.nodes)
        gpus = sum(n.gpus for n in cluster.nodes)
        accelerators = f" ({', '.join(cluster.accelerators)})" if cluster.accelerators else ""
        echo(
            f"\ncluster {cluster.address}: {len(cluster.nodes)} node(s), {cpus:g} CPU, "
            f"{gpus:g} GPU{accelerators}"
        )
        for note in fit.notes:
            echo(f"note: {note}")
        if fit.fits:
            echo(f"fits: {fit.concurrent_trials} trial(s) at once")
    est = capacity.estimate(
        capacity.total_flops(study_plan.trials), spec.budget, cluster=cluster, cap=budget
    )
    if est is not None:
        echo(f"compute: {est.describe()}")
    if fit is not None and not fit.fits:
        raise BioscaleError(
            f"the study will not fit the cluster at {cluster.address}:\n  - "
            + "\n  - ".join(fit.problems)
        )
    capacity.enforce_budget(est, proceed)


def format_plan(study_plan) -> str:
    """The plan table: one line per trial (rung, N, objective, diet, seed, D, epochs, FLOPs, key
    prefix), the total compute, and every dropped grid point and skipped evaluation with why."""
    spec = study_plan.spec
    res = spec.resources
    lines = [
        f"study {spec.name!r} on {study_plan.manifest.path} "
        f"({study_plan.manifest.n_rows:,} samples, manifest sha {study_plan.manifest.sha[:12]})",
        f"resources per trial: {res.workers_per_trial} worker(s) × {res.cpus_per_worker:g} CPU"
        f" + {res.gpus_per_worker:g} GPU; up to {res.max_concurrent_trials} trials at once",
        "",
    ]
    header = (
        f"{'#':>3}  {'rung':<14}{'N':>10}  {'objective':<12}{'diet':<34}{'seed':>4}"
        f"{'D_samples':>10}{'D_cmpds':>8}{'epochs':>7}{'FLOPs':>11}  key"
    )
    lines += [header, "-" * len(header)]
    total = 0.0
    for t in study_plan.trials:
        p = t.params
        total += t.flops_total
        lines.append(
            f"{t.index + 1:>3}  {p['rung']:<14}{p['N']:>10,}  {p['objective']:<12}"
            f"{p['diet']:<34}{p['seed']:>4}{p['D_samples']:>10,}{p['D_compounds']:>8,}"
            f"{p['epochs']:>7}{t.flops_total:>11.3g}  {t.key[:12]}"
        )
    lines += [
        "",
        f"{len(study_plan.trials)} trials; total compute at most {total:.3g} FLOPs "
        "(forward+backward, measured per sample; early stopping can only lower it)",
    ]
    for point, why in study_plan.dropped:
        lines.append(f"dropped: {point.describe()} — {why}")
    for point, why in study_plan.skipped:
        lines.append(f"evaluation skipped: {point.describe()} — {why}")
    return "\n".join(lines)
