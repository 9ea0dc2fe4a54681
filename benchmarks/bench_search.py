"""Cost of ``search="cv"`` against the plain fit, at ImageNet scale, and the 10,000-class walls.

Data: :func:`sklearn_cmm.protocol.synthetic.synthetic_problem` (CLIP-like 512-d features,
ImageNet's difficulty), 1000 classes x 16 shots for training, 5 test images a class.

Table 1, per method (Tip-Adapter; SeMoBridge unless ``--no-semobridge``), each at its own
default number of trials (200 and 500): the plain fit and the ``search="cv"`` fit, both at
the defaults (``calibration="temperature"``, which fits a temperature on held-out logits
of at most 1000 shots) and with ``calibration=None`` (plain fits best of 3, search fits
one run), their ratios, the time to predict the 5000 test images and the test accuracy.
Both searches score at most 1000 left-out shots (a random subset, ``random_state``).

Table 2, SeMoBridge-T (``train=True``, unless ``--no-trained``): a short validated
training (``max_iter=10``, checkpoints every 5 steps) with ``search="cv"``, the time spent
in the blend searches (the trained checkpoint's and the closed form's held-out scores)
against the whole fit.

Table 3, the walls of issue #10: Tip-Adapter predicting one image with a cache of 10,000
classes x 4 shots (time and peak memory of the call, by ``tracemalloc``), and
``search="cv"`` at 10,000 classes x 1 shot for Tip-Adapter and SeMoBridge.

One thread (the numbers are for a single core); the machine and its load average are in
the JSON.

Usage::

    python benchmarks/bench_search.py                  # ~5 min on one busy core
    python benchmarks/bench_search.py --no-semobridge  # Tip-Adapter only

Results go to ``benchmarks/results/bench_search.json`` (``--out``).
"""

import argparse
import json
import os
import platform
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from sklearn_cmm.protocol.methods import make_classifier
from sklearn_cmm.protocol.synthetic import synthetic_problem

OUT = Path(__file__).resolve().parent / "results" / "bench_search.json"


def _fit(method, problem, **params):
    text = {k: problem[k] for k in ("text_features", "text_projection")}
    clf = make_classifier(method, **text, random_state=0, **params)
    start = time.perf_counter()
    clf.fit(problem["train_features"], problem["train_labels"])
    return clf, time.perf_counter() - start


def search_table(problem, methods, log):
    rows = []
    test = (problem["test_features"], problem["test_labels"])
    for method in methods:
        row = {"method": method, "n_classes": len(problem["text_features"]),
               "n_train": len(problem["train_labels"]),
               "dim": problem["train_features"].shape[1], "n_test": len(test[1])}
        for label, calibration in (("", {}), ("_uncalibrated", {"calibration": None})):
            plain_s = min(_fit(method, problem, search=None, **calibration)[1]
                          for _ in range(3))
            plain, _ = _fit(method, problem, search=None, **calibration)
            searched, search_s = _fit(method, problem, search="cv", **calibration)
            row.update({
                f"plain_fit{label}_s": plain_s,
                f"search_fit{label}_s": search_s,
                f"search_over_plain{label}": search_s / plain_s,
            })
            if not label:
                start = time.perf_counter()
                accuracy_searched = searched.score(*test)
                row.update({
                    "n_search_trials": searched.n_search_trials,
                    "predict_test_s": time.perf_counter() - start,
                    "accuracy_plain": plain.score(*test),
                    "accuracy_searched": accuracy_searched,
                    "search_score": searched.search_score_,
                })
        rows.append(row)
        log(f"{method:12s} ({row['n_search_trials']} trials)  "
            f"calibrated: plain {row['plain_fit_s']:6.2f} s, search {row['search_fit_s']:6.2f} s "
            f"({row['search_over_plain']:5.1f}x)   uncalibrated: plain "
            f"{row['plain_fit_uncalibrated_s']:6.2f} s, search "
            f"{row['search_fit_uncalibrated_s']:6.2f} s ({row['search_over_plain_uncalibrated']:5.1f}x)"
            f"   predict {row['n_test']} {row['predict_test_s']:5.2f} s   accuracy "
            f"{row['accuracy_plain']:.3f} -> {row['accuracy_searched']:.3f}")
    return rows


def trained_search(problem, log):
    """SeMoBridge-T with search="cv": the time in the blend searches against the fit."""
    from sklearn_cmm import semobridge

    spent = []
    original = semobridge._search_accuracies

    def timed(parts, candidates):
        start = time.perf_counter()
        out = original(parts, candidates)
        spent.append(time.perf_counter() - start)
        return out

    semobridge._search_accuracies = timed
    try:
        params = dict(train=True, max_iter=10, validation_interval=5, warmup_iter=0,
                      learning_rate=1e-3, device="cpu", search="cv")
        clf, fit_s = _fit("semobridge", problem, **params)
    finally:
        semobridge._search_accuracies = original
    out = {"fit_s": fit_s, "search_s": sum(spent), "n_searches": len(spent),
           "search_share": sum(spent) / fit_s, "best_iter": clf.best_iter_,
           "n_search_trials": clf.n_search_trials, **{k: v for k, v in params.items()
                                                      if k != "search"}}
    log(f"SeMoBridge-T (max_iter=10): fit {fit_s:.1f} s, of which {len(spent)} blend searches "
        f"{sum(spent):.2f} s ({100 * out['search_share']:.0f}%), best_iter_={clf.best_iter_}")
    return out


def walls(methods, log):
    out = {}
    problem = synthetic_problem(10_000, 4, 1, dim=512)
    clf, fit_s = _fit("tip-adapter", problem, search=None)
    tracemalloc.start()
    start = time.perf_counter()
    clf.predict(problem["test_features"][:1])
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out["predict_one_row_10000x4"] = {"seconds": seconds, "peak_mb": peak / 1e6,
                                      "fit_s": fit_s}
    log(f"Tip-Adapter, 10,000 classes x 4 shots: predict 1 image {seconds:.3f} s, "
        f"peak {peak / 1e6:.0f} MB (issue #10 before: 12 s, 4 GB)")
    problem = synthetic_problem(10_000, 1, 1, dim=512)
    before = {"tip-adapter": "279 s for 3 trials", "semobridge": "80 s for 3 trials"}
    for method in methods:
        plain_s = _fit(method, problem, search=None)[1]
        searched, search_s = _fit(method, problem, search="cv")
        out[f"search_10000x1_{method}"] = {
            "search_fit_s": search_s, "plain_fit_s": plain_s,
            "search_over_plain": search_s / plain_s,
            "n_search_trials": searched.n_search_trials,
        }
        log(f"{method}, 10,000 classes x 1 shot: search='cv' ({searched.n_search_trials} "
            f"trials) {search_s:.1f} s, plain fit {plain_s:.2f} s (issue #10 before: "
            f"{before[method]})")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-semobridge", action="store_true")
    parser.add_argument("--no-trained", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    methods = ["tip-adapter"] + ([] if args.no_semobridge else ["semobridge"])
    with threadpool_limits(1):
        problem = synthetic_problem(1000, 16, 5, dim=512)
        load_before = os.getloadavg()
        rows = search_table(problem, methods, print)
        trained = None
        if "semobridge" in methods and not args.no_trained:
            trained = trained_search(problem, print)
        wall = walls(methods, print)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average": os.getloadavg(),
        "threads": 1,
        "numpy": np.__version__,
        "search": rows,
        "trained": trained,
        "walls": wall,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
