"""A small mutation tester: plant one bug at a time, run the tests, count the survivors.

Each mutant changes one operator or constant of one module (a comparison flipped at its
boundary, ``+`` for ``-``, ``*`` for ``/``, ``and`` for ``or``, an integer off by one, a
``True`` for ``False``) and runs the tests that cover that module; a mutant the tests
do not fail *survives* and shows an untested behaviour. Mutants are drawn at random
(seeded) when there are more than ``--per-module``.

Usage::

    python tools/mutation_test.py                      # the default targets below
    python tools/mutation_test.py --per-module 10 --seed 1 --out mutation.json

This script is not imported by the package; it edits a module in place while a mutant
runs and always restores it.
"""

import argparse
import ast
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: module -> the tests that cover it.
TARGETS = {
    "sklearn_cmm/_math/basic.py": ["tests/test_math_basic.py"],
    "sklearn_cmm/_math/cmm.py": ["tests/test_math_cmm.py", "tests/test_cmm.py"],
    "sklearn_cmm/_math/cmm_loss.py": ["tests/test_math_cmm.py", "tests/test_cmm.py"],
    "sklearn_cmm/_math/lbfgs.py": ["tests/test_math_lbfgs.py", "tests/test_cmm.py"],
    "sklearn_cmm/_math/semobridge_loss.py": ["tests/test_math_semobridge.py",
                                             "tests/test_semobridge.py"],
    "sklearn_cmm/_math/unit_rows.py": ["tests/test_math_unit_rows.py",
                                       "tests/test_math_semobridge.py", "tests/test_math_cmm.py"],
    "sklearn_cmm/_math/semobridge.py": ["tests/test_math_semobridge.py", "tests/test_semobridge.py"],
    "sklearn_cmm/_math/tip_adapter.py": ["tests/test_baselines.py"],
    "sklearn_cmm/_math/search.py": ["tests/test_baselines.py", "tests/test_semobridge.py"],
    "sklearn_cmm/_torch.py": ["tests/test_torch.py", "tests/test_cmm.py"],
    "sklearn_cmm/cmm.py": ["tests/test_cmm.py"],
    "sklearn_cmm/semobridge.py": ["tests/test_semobridge.py"],
    "sklearn_cmm/baselines.py": ["tests/test_baselines.py"],
    "sklearn_cmm/text.py": ["tests/test_text.py"],
    "sklearn_cmm/model_selection.py": ["tests/test_model_selection.py"],
    "sklearn_cmm/protocol/sampling.py": ["tests/test_protocol.py"],
}

_SWAPS = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.And: ast.Or, ast.Or: ast.And,
}


def mutation_points(tree):
    """``(node, field, index_or_None, new_value, description)`` for every mutable spot."""
    points = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _SWAPS:
                    points.append((node, "ops", i, _SWAPS[type(op)](), f"{type(op).__name__}->{_SWAPS[type(op)].__name__}"))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _SWAPS:
            points.append((node, "op", None, _SWAPS[type(node.op)](), f"{type(node.op).__name__}->{_SWAPS[type(node.op)].__name__}"))
        elif isinstance(node, ast.BoolOp) and type(node.op) in _SWAPS:
            points.append((node, "op", None, _SWAPS[type(node.op)](), f"{type(node.op).__name__}->{_SWAPS[type(node.op)].__name__}"))
        elif isinstance(node, ast.Constant) and type(node.value) is int and not isinstance(node.value, bool):
            points.append((node, "value", None, node.value + 1, f"{node.value}->{node.value + 1}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            points.append((node, "value", None, not node.value, f"{node.value}->{not node.value}"))
    # Docstrings and annotations hold no behaviour; constants there are skipped by lineno
    # only when they sit inside a docstring expression.
    return [p for p in points if getattr(p[0], "lineno", None) is not None]


def mutant_source(source, point_index):
    tree = ast.parse(source)
    node, field, index, new, description = mutation_points(tree)[point_index]
    line = node.lineno
    if index is None:
        setattr(node, field, new)
    else:
        getattr(node, field)[index] = new
    return ast.unparse(tree), line, description


def run_tests(tests, timeout):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "killed (timeout)"
    return "survived" if result.returncode == 0 else "killed"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Plant one bug at a time and run the tests.")
    parser.add_argument("--per-module", type=int, default=8, help="mutants drawn per module")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    parser.add_argument("--modules", default=None, help="comma-separated subset of the targets")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per test run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/mutation.json")
    args = parser.parse_args(argv)
    modules = list(TARGETS) if args.modules is None else args.modules.split(",")
    rng = random.Random(args.seed)
    rows = []
    start = time.perf_counter()
    for module in modules:
        path = REPO / module
        original = path.read_text()
        n_points = len(mutation_points(ast.parse(original)))
        chosen = sorted(rng.sample(range(n_points), min(args.per_module, n_points)))
        try:
            for k in chosen:
                source, line, description = mutant_source(original, k)
                path.write_text(source)
                outcome = run_tests(TARGETS[module], args.timeout)
                rows.append({"module": module, "line": line, "mutation": description, "outcome": outcome})
                print(f"{outcome:>17}  {module}:{line}  {description}", flush=True)
        finally:
            path.write_text(original)
    killed = sum(r["outcome"].startswith("killed") for r in rows)
    score = killed / len(rows) if rows else float("nan")
    print(f"\n{killed} of {len(rows)} mutants killed ({100 * score:.0f}%) in {time.perf_counter() - start:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seed": args.seed, "per_module": args.per_module,
                                    "score": score, "mutants": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
