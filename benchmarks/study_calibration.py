"""Calibrated probabilities: log-loss and ECE of every method before and after its temperature.

For every test bed (:mod:`testbeds`: fashion-tiny, synthetic-100, and fashion-tiny-b when
its features are cached), shot count (1, 4, 16) and seed (1-3), each method (zero-shot,
Tip-Adapter ``search="cv"``, CMM at its defaults, SeMoBridge ``search="cv"``; the test
bed's text given explicitly) is fitted once on the training shots of
:func:`testbeds.split_shots`. On the test images (never seen by a fit) the study reports
top-1 accuracy and, for three ways of turning the same logits into probabilities, the
log-loss and the expected calibration error (15 equal-width bins):

``raw``
    ``softmax(logits)``, the method's own scale (``calibration=None``).
``naive``
    ``softmax(logits / T)`` with ``T`` fitted on the fitted model's logits of its own
    training shots (what the default ``_calibration_logits`` gives every method).
``honest``
    ``predict_proba``: ``T = temperature_``, fitted on the method's held-out logits of the
    shots (each estimator's ``_calibration_logits``).

Accuracy is the same for the three: a temperature does not change the argmax.

Usage::

    python benchmarks/study_calibration.py            # about 10 minutes on one CPU thread
    python benchmarks/study_calibration.py --testbeds fashion-tiny --shots 1,4

Results go to ``benchmarks/results/study_calibration.json`` (``--out``).
"""

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from scipy.special import softmax
from sklearn.metrics import log_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbeds  # noqa: E402

from sklearn_cmm import (  # noqa: E402
    CrossModalMappingClassifier,
    SeMoBridgeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
)
from sklearn_cmm._math.calibration import (  # noqa: E402
    expected_calibration_error,
    fit_temperature,
    laplace_smoothing,
)

OUT = Path(__file__).resolve().parent / "results" / "study_calibration.json"
SHOTS = (1, 4, 16)
SEEDS = (1, 2, 3)
TESTBEDS = ("fashion-tiny", "fashion-tiny-b", "synthetic-100")
METHODS = {
    "zero-shot": (ZeroShotClassifier, "zero_shot", {}),
    "tip-adapter-cv": (TipAdapterClassifier, "tip_adapter", {"search": "cv"}),
    "cmm": (CrossModalMappingClassifier, "cmm", {"device": "cpu"}),
    "semobridge-cv": (SeMoBridgeClassifier, "semobridge", {"search": "cv", "device": "cpu"}),
}


# ------------------------------------------------------------------------------- the study


def _scores(y_test, proba, n_classes):
    return {
        "log_loss": float(log_loss(y_test, proba, labels=np.arange(n_classes))),
        "ece": expected_calibration_error(y_test, proba),
        "mean_confidence": float(proba.max(axis=1).mean()),
    }


def run_one(bed, method, n_shots, seed):
    cls, text_key, params = METHODS[method]
    train, _, test = testbeds.split_shots(bed.y, n_shots, seed)
    X, y, X_test, y_test = bed.X[train], bed.y[train], bed.X[test], bed.y[test]
    clf = cls(**bed.text_kwargs(text_key), **params, random_state=seed)
    start = time.perf_counter()
    clf.fit(X, y)
    fit_s = time.perf_counter() - start
    logits = clf.decision_function(X_test)
    naive_t = fit_temperature(clf.decision_function(X), y, laplace_smoothing(len(y)))
    return {
        "testbed": bed.name, "method": method, "shots": n_shots, "seed": seed,
        "accuracy": float(np.mean(clf.predict(X_test) == y_test)),
        "fit_s": fit_s,
        "temperature_naive": naive_t,
        "temperature_honest": float(clf.temperature_),
        "raw": _scores(y_test, softmax(logits, axis=1), bed.n_classes),
        "naive": _scores(y_test, softmax(logits / naive_t, axis=1), bed.n_classes),
        "honest": _scores(y_test, clf.predict_proba(X_test), bed.n_classes),
    }


def summarize(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["testbed"], r["shots"], r["method"]), []).append(r)
    summary = []
    for (bed, shots, method), rs in groups.items():
        entry = {"testbed": bed, "shots": shots, "method": method, "n_seeds": len(rs)}
        for key in ("accuracy", "temperature_honest", "fit_s"):
            values = [r[key] for r in rs]
            entry[key] = [float(np.mean(values)), float(np.std(values))]
        for kind in ("raw", "naive", "honest"):
            for key in ("log_loss", "ece", "mean_confidence"):
                values = [r[kind][key] for r in rs]
                entry[f"{kind}_{key}"] = [float(np.mean(values)), float(np.std(values))]
        summary.append(entry)
    return summary


def print_table(summary):
    header = (f"{'test bed':14} {'shots':>5} {'method':15} {'top-1 %':>11} {'T':>7} "
              f"{'log-loss raw / naive / honest':>31} {'ECE % raw / naive / honest':>28}")
    print(header)
    print("-" * len(header))
    for e in summary:
        acc, t = e["accuracy"], e["temperature_honest"]
        ll = " / ".join(f"{e[f'{k}_log_loss'][0]:.3f}" for k in ("raw", "naive", "honest"))
        ece = " / ".join(f"{100 * e[f'{k}_ece'][0]:5.1f}" for k in ("raw", "naive", "honest"))
        print(f"{e['testbed']:14} {e['shots']:5d} {e['method']:15} "
              f"{100 * acc[0]:5.1f}±{100 * acc[1]:3.1f} {t[0]:7.3f} {ll:>31} {ece:>28}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--testbeds", default=",".join(TESTBEDS))
    parser.add_argument("--shots", default=",".join(map(str, SHOTS)))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name in args.testbeds.split(","):
        try:
            bed = testbeds.load_testbed(name)
        except FileNotFoundError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        for n_shots in map(int, args.shots.split(",")):
            for method in args.methods.split(","):
                for seed in map(int, args.seeds.split(",")):
                    rows.append(run_one(bed, method, n_shots, seed))
                    r = rows[-1]
                    print(f"{name} {n_shots}-shot {method} seed {seed}: top-1 "
                          f"{r['accuracy']:.3f}, log-loss {r['raw']['log_loss']:.3f} -> "
                          f"{r['honest']['log_loss']:.3f} (T={r['temperature_honest']:.3g}), "
                          f"{r['fit_s']:.1f} s", file=sys.stderr, flush=True)
    summary = summarize(rows)
    print_table(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/study_calibration.py", *(argv or sys.argv[1:])]),
        "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
        "ece_bins": 15,
        "summary": summary, "rows": rows,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
