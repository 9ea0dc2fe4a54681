"""Cost of ``search="cv"`` against the plain fit, at ImageNet scale, and Tip-Adapter's walls.

Data: :func:`sklearn_cmm.protocol.synthetic.synthetic_problem` (CLIP-like 512-d features,
ImageNet's difficulty), 1000 classes x 16 shots for training, 5 test images a class.

Table 1, per method (Tip-Adapter; SeMoBridge unless ``--no-semobridge``): the plain fit
(best of 3), the ``search="cv"`` fit at the default 200 trials (one run), their ratio, the
time to predict the 5000 test images and the test accuracy of both fits. SeMoBridge's
search takes minutes at this size (every trial recomputes three ``n_shots_total x
n_classes`` kernels and its class weights): it is timed at 1 and 11 trials and the
200-trial time extrapolated (``extrapolated: true``; its accuracy is the 11-trial one).

Table 2, the two Tip-Adapter walls of issue #10: predicting one image with a cache of
10,000 classes x 4 shots (time and peak memory of the call, by ``tracemalloc``), and
``search="cv"`` at 10,000 classes x 1 shot.

One thread (the numbers are for a single core); the machine is named in the JSON.

Usage::

    python benchmarks/bench_search.py                  # ~8 min on one busy core
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

from sklearn_cmm.methods import make_classifier
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
    for method in methods:
        plain_s = min(_fit(method, problem)[1] for _ in range(3))
        plain, _ = _fit(method, problem)
        extrapolated = method == "semobridge"
        if extrapolated:
            one_s = _fit(method, problem, search="cv", n_search_trials=1)[1]
            searched, eleven_s = _fit(method, problem, search="cv", n_search_trials=11)
            search_s = one_s + 199 * (eleven_s - one_s) / 10
        else:
            searched, search_s = _fit(method, problem, search="cv")
        start = time.perf_counter()
        accuracy_searched = searched.score(problem["test_features"], problem["test_labels"])
        predict_s = time.perf_counter() - start
        row = {
            "method": method,
            "n_classes": len(problem["text_features"]),
            "n_train": len(problem["train_labels"]),
            "dim": problem["train_features"].shape[1],
            "n_search_trials": 200,
            "extrapolated": extrapolated,
            "plain_fit_s": plain_s,
            "search_fit_s": search_s,
            "search_over_plain": search_s / plain_s,
            "predict_test_s": predict_s,
            "n_test": len(problem["test_labels"]),
            "accuracy_plain": plain.score(problem["test_features"], problem["test_labels"]),
            "accuracy_searched": accuracy_searched,
            "search_score": searched.search_score_,
        }
        rows.append(row)
        mark = "*" if extrapolated else " "
        log(f"{method:12s} plain fit {plain_s:7.2f} s   search='cv' {search_s:7.2f} s{mark}"
            f"({row['search_over_plain']:6.1f}x)   predict {row['n_test']} {predict_s:6.2f} s   "
            f"accuracy {row['accuracy_plain']:.3f} -> {accuracy_searched:.3f}")
    return rows


def walls(log):
    out = {}
    problem = synthetic_problem(10_000, 4, 1, dim=512)
    clf, fit_s = _fit("tip-adapter", problem)
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
    plain_s = _fit("tip-adapter", problem)[1]
    _, search_s = _fit("tip-adapter", problem, search="cv")
    out["search_10000x1"] = {"search_fit_s": search_s, "plain_fit_s": plain_s,
                             "n_search_trials": 200}
    log(f"Tip-Adapter, 10,000 classes x 1 shot: search='cv' (200 trials) {search_s:.1f} s, "
        f"plain fit {plain_s:.2f} s (issue #10 before: 279 s for 3 trials)")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-semobridge", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    methods = ["tip-adapter"] + ([] if args.no_semobridge else ["semobridge"])
    with threadpool_limits(1):
        problem = synthetic_problem(1000, 16, 5, dim=512)
        rows = search_table(problem, methods, print)
        wall = walls(print)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "threads": 1,
        "numpy": np.__version__,
        "search": rows,
        "walls": wall,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
