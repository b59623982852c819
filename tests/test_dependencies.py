"""ARCHITECTURE's dependency rules, read from the library's code (``ast``: module-level imports,
imports inside functions and ``TYPE_CHECKING`` blocks alike) and, for the two about heavy stacks,
from ``sys.modules`` of real processes. ``jobs/`` may import ``study``; benchmarks and tests are
not the library."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from bioscale.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "platform" / "bioscale"


def module_of(path: Path) -> str:
    """``platform/bioscale/eval/probe.py`` → ``bioscale.eval.probe`` (packages: their name)."""
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``source`` wherever it stands, relative imports
    resolved against ``module``; ``from a import b`` counts as ``a`` and as ``a.b``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@dataclass(frozen=True)
class Rule:
    """Code under ``sources`` (minus ``except_``) imports nothing under ``forbidden``."""

    id: str
    text: str  # as ARCHITECTURE states it
    sources: tuple[str, ...]
    forbidden: tuple[str, ...]
    except_: tuple[str, ...] = ()


RULES = [
    Rule(
        "core-layers",
        "data, models and objectives never import study, train or the CLI",
        ("bioscale.data", "bioscale.models", "bioscale.objectives"),
        ("bioscale.study", "bioscale.train", "bioscale.cli"),
    ),
    Rule(
        "scaling",
        "scaling never imports data, models or train",
        ("bioscale.scaling",),
        ("bioscale.data", "bioscale.models", "bioscale.train"),
    ),
    Rule(
        "study-users",
        "only the CLI and jobs/ import study",
        ("bioscale",),
        ("bioscale.study",),
        except_=("bioscale.study", "bioscale.cli"),
    ),
    Rule(
        "cli",
        "nothing in the library imports the CLI",
        ("bioscale",),
        ("bioscale.cli",),
        except_=("bioscale.cli",),
    ),
    Rule("train-eval", "train does not import eval", ("bioscale.train",), ("bioscale.eval",)),
    Rule("eval-study", "eval does not import study", ("bioscale.eval",), ("bioscale.study",)),
]


def violations(rule: Rule) -> list[str]:
    """``file:line imports module`` for every import statement breaking ``rule``."""
    out = set()
    for path in sorted(LIB.rglob("*.py")):
        module = module_of(path)
        if not within(module, rule.sources) or within(module, rule.except_):
            continue
        for line, name in imported(path.read_text(), module, path.name == "__init__.py"):
            if within(name, rule.forbidden):
                out.add((str(path.relative_to(REPO)), line, name))
    # one entry per statement, its shortest forbidden name (``from a.b import c``: ``a.b``)
    seen, lines = set(), []
    for file, line, name in sorted(out, key=lambda v: (v[0], v[1], len(v[2]))):
        if (file, line) not in seen:
            seen.add((file, line))
            lines.append(f"{file}:{line} imports {name}")
    return lines


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_dependency_rule(rule):
    found = violations(rule)
    assert not found, f"{rule.text}:\n" + "\n".join(found)


def test_the_reader_sees_lazy_type_checking_and_relative_imports():
    source = textwrap.dedent(
        """
        from typing import TYPE_CHECKING
        from . import sibling
        from ..study import plan
        if TYPE_CHECKING:
            from bioscale.study.spec import StudySpec
        def f():
            import torch
            from bioscale.cli import main
        """
    )
    names = {name for _, name in imported(source, "bioscale.eval.probe")}
    assert {
        "bioscale.eval.sibling",
        "bioscale.study.plan",
        "bioscale.study.spec",
        "torch",
        "bioscale.cli.main",
    } <= names
    # a package's relative imports start at the package itself
    assert "bioscale.eval.tasks" in {
        n for _, n in imported("from . import tasks", "bioscale.eval", True)
    }


HEAVY = ("torch", "ray", "mlflow")


def _loaded_after(code: str, *, cwd: Path) -> tuple[list[str], str]:
    """The heavy stacks ``code`` (run in a fresh interpreter) left in ``sys.modules`` at exit,
    and its stdout."""
    report = cwd / "modules.json"
    probe = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(report)!r}, 'w').write(json.dumps(sorted("
        f"{{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))))\n" + code
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(LIB.parent), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text()), proc.stdout


def test_import_bioscale_imports_no_torch_ray_or_mlflow(tmp_path):
    loaded, _ = _loaded_after("import bioscale", cwd=tmp_path)
    assert loaded == []


SMALL_STUDY = """
name: small
data:
  synthetic: {seed: 1, n_moa: 8, compounds_per_moa: 4, n_extra: 24, n_unlabelled_moa: 4,
              plates_per_batch: 2}
grids:
  - rung: [debug, mlp:w64-l1]
    diet: [{replicates: 0.5}, {replicates: 1.0, extra: all}]
    objective: [supervised, ibp]
train: {budget: {epochs: 2}}
probe: {selection: search, layers: [0, -1]}   # named layers: checked on every rung at load
"""


def test_study_plan_imports_no_torch_and_plans_what_the_library_plans(tmp_path):
    """The real command on a small synthetic study: no torch in its process (sizes, FLOPs, the
    named probe layers and the bf16 check run in a helper process), and the same trials, keys, N and FLOPs as a plan
    made where torch is loaded."""
    import torch  # noqa: F401 - the reference plan measures in this process

    from bioscale.study.plan import plan
    from bioscale.study.runner import ensure_manifest
    from bioscale.study.spec import StudySpec

    study = tmp_path / "small.yaml"
    study.write_text(SMALL_STUDY)
    out = tmp_path / "out"
    loaded, stdout = _loaded_after(
        "import runpy\n"
        f"sys.argv = ['bioscale', 'study', 'plan', {str(study)!r}, '--out', {str(out)!r}]\n"
        "runpy.run_module('bioscale.cli', run_name='__main__')\n",
        cwd=tmp_path,
    )
    assert "torch" not in loaded
    spec = StudySpec.load(study)
    reference = plan(spec, ensure_manifest(spec, out))
    rungs = {"debug", "mlp:w64-l1"}
    rows = [row for row in map(str.split, stdout.splitlines()) if row[1:2] and row[1] in rungs]
    assert len(rows) == len(reference.trials) == 8
    for row, trial in zip(rows, reference.trials, strict=True):
        assert row[-1] == trial.key[:12]
        assert row[2] == f"{trial.params['N']:,}"
        assert row[-2] == f"{trial.flops_total:.3g}"


def test_the_helper_process_measures_what_this_process_measures():
    """Same parameter counts and FLOPs (bit for bit) from the helper process as in place, and a
    bad request fails there as it would here: the same error type, naming the thing."""
    import torch  # noqa: F401 - in place means in this process, with torch

    from bioscale.train import measure

    request = {
        "op": "size_and_flops",
        "rung": "debug",
        "input_shape": [16],
        "objective": {"name": "ibp", "params": {}},
        "num_classes": {"y": 5},
    }
    helper = measure._Helper()
    try:
        assert helper.ask(request) == list(measure._answer(request))
        assert helper.ask({"op": "cpu_bf16_native"}) == measure._answer({"op": "cpu_bf16_native"})
        names = {"op": "layer_names", "rung": "vit:debug", "input_shape": [3, 32, 32]}
        assert helper.ask(names) == measure._answer(names)
        assert helper.ask(names)[-1].startswith("blocks.")
        with pytest.raises(ConfigError, match="unknown model rung 'mlp:w64-l1x'"):
            helper.ask({**request, "rung": "mlp:w64-l1x"})
    finally:
        helper.close()
