"""Closed-form fit time at ImageNet scale against scikit-learn's RidgeClassifier.

Data: 1000 classes x 16 shots = 16,000 float32 image features of dimension 1024 with a
modality gap (:func:`sklearn_cmm.protocol.synthetic.synthetic_problem`), the class text
prototypes and a 1024 x 1024 text projection.

Target: the closed-form fits, ``CrossModalMappingClassifier(max_iter=0)`` and
``SeMoBridgeClassifier()`` (``train=False``), each take at most 1.5x the time of
``RidgeClassifier().fit`` on the same features and labels, measured in the same run
(best of ``--repeats``, the three interleaved so that they see the same machine load).

The training paths are timed too, with their step counts: CMM's refinement at its
default ``max_iter``, and SeMoBridge-T for ``--sbt-steps`` steps, from which the time of
its default 5000 steps is extrapolated (the closed form it starts from, plus the steps).

Usage::

    python benchmarks/bench_fit.py            # ~2 min on 2 cores
    python benchmarks/bench_fit.py --quick    # 200 classes x 8 shots, dimension 256

Results go to ``benchmarks/results/bench_fit.json`` (``--out``).
"""

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.linear_model import RidgeClassifier

from sklearn_cmm import CrossModalMappingClassifier, SeMoBridgeClassifier
from sklearn_cmm.protocol.synthetic import synthetic_problem

OUT = Path(__file__).resolve().parent / "results" / "bench_fit.json"
MAX_RATIO = 1.5
SBT_DEFAULT_STEPS = SeMoBridgeClassifier().max_iter


def _estimators(text_features, text_projection, sbt_steps):
    """name -> (unfitted estimator, whether it is a closed form)."""
    text = {"text_features": text_features, "random_state": 0, "device": "cpu"}
    return {
        "RidgeClassifier": (RidgeClassifier(), True),
        "CMM closed form (max_iter=0)": (CrossModalMappingClassifier(max_iter=0, **text), True),
        "SeMoBridge (train=False)": (
            SeMoBridgeClassifier(text_projection=text_projection, **text), True),
        "CMM refinement (default max_iter)": (CrossModalMappingClassifier(**text), False),
        f"SeMoBridge-T ({sbt_steps} steps)": (
            SeMoBridgeClassifier(text_projection=text_projection, train=True,
                                 max_iter=sbt_steps, warmup_iter=min(500, sbt_steps // 10),
                                 **text), False),
    }


def _fit_seconds(estimator, X, y):
    start = time.perf_counter()
    estimator.fit(X, y)
    return time.perf_counter() - start, estimator


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (development)")
    parser.add_argument("--repeats", type=int, default=3, help="closed-form fits per method")
    parser.add_argument("--sbt-steps", type=int, default=20,
                        help="SeMoBridge-T steps timed (the 5000-step time is extrapolated)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    n_classes, shots, dim = (200, 8, 256) if args.quick else (1000, 16, 1024)
    problem = synthetic_problem(n_classes, shots, 1, dim)
    X = problem["train_features"].astype(np.float32)
    y = problem["train_labels"]
    estimators = _estimators(problem["text_features"], problem["text_projection"],
                             args.sbt_steps)
    warm = synthetic_problem(5, 2, 1, 16)  # first calls pay torch's and LAPACK's start-up
    for estimator, _ in _estimators(warm["text_features"], warm["text_projection"],
                                    2).values():
        estimator.fit(warm["train_features"].astype(np.float32), warm["train_labels"])

    closed = [name for name, (_, is_closed) in estimators.items() if is_closed]
    times = {name: [] for name in estimators}
    for _ in range(args.repeats):
        for name in closed:
            times[name].append(_fit_seconds(estimators[name][0], X, y)[0])
    steps = {}
    for name, (estimator, is_closed) in estimators.items():
        if not is_closed:
            seconds, fitted = _fit_seconds(estimator, X, y)
            times[name].append(seconds)
            steps[name] = int(fitted.n_iter_)

    ridge = min(times["RidgeClassifier"])
    sb_closed = min(times["SeMoBridge (train=False)"])
    rows = []
    for name in estimators:
        best = min(times[name])
        row = {"method": name, "fit_s": best, "all_fit_s": times[name],
               "ratio_to_ridge": best / ridge, "steps": steps.get(name, 0)}
        if name in closed and name != "RidgeClassifier":
            row["target_met"] = best <= MAX_RATIO * ridge
        if name.startswith("SeMoBridge-T"):
            per_step = max(best - sb_closed, 0) / row["steps"]
            row["per_step_s"] = per_step
            extrapolated = sb_closed + SBT_DEFAULT_STEPS * per_step
            row[f"extrapolated_{SBT_DEFAULT_STEPS}_steps_s"] = extrapolated
        elif row["steps"]:
            row["per_step_s"] = best / row["steps"]
        rows.append(row)

    threads = torch.get_num_threads()
    print(f"bench_fit: {len(y)} x {dim} float32 features, {n_classes} classes, "
          f"{os.cpu_count()} cores, torch {threads} threads, best of {args.repeats} for "
          "closed forms\n")
    print(f"{'method':<36}{'fit s':>9}{'x ridge':>9}{'steps':>7}{'s/step':>9}  target")
    for row in rows:
        target = ""
        if "target_met" in row:
            target = f"<= {MAX_RATIO}x ridge: {'met' if row['target_met'] else 'NOT met'}"
        extra = row.get(f"extrapolated_{SBT_DEFAULT_STEPS}_steps_s")
        if extra is not None:
            target = f"{SBT_DEFAULT_STEPS} steps ~ {extra:.0f} s (extrapolated)"
        per_step = f"{row['per_step_s']:.4f}" if "per_step_s" in row else "-"
        print(f"{row['method']:<36}{row['fit_s']:>9.3f}{row['ratio_to_ridge']:>9.2f}"
              f"{row['steps']:>7}{per_step:>9}  {target}")

    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": threads, "torch": torch.__version__, "numpy": np.__version__,
        "scikit-learn": sklearn.__version__, "quick": args.quick,
        "sizes": {"n_train": int(len(y)), "dim": dim, "n_classes": n_classes},
        "repeats": args.repeats, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"\nWrote {args.out}")


if __name__ == "__main__":
    main()
