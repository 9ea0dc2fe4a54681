"""Choose CrossModalMappingClassifier's defaults on validation shots, report them on test.

For every test bed (:mod:`testbeds`), number of shots and seed, the few-shot training set,
a disjoint validation draw of as many shots and the test set (all other images) are drawn
with :func:`testbeds.split_shots`. Every candidate CMM configuration (:data:`CANDIDATES`)
and the reference methods (:data:`BASELINES`: zero-shot, Tip-Adapter and SeMoBridge at their
defaults, given the test bed's text explicitly) are
fitted on the training shots and scored on both.

The chosen configuration is the candidate with the best validation top-1 averaged over
every test bed and shot count (seeds averaged first): the test images never take part.
Reported per test bed and shot count: test top-1, log-loss and expected calibration error
(15 equal-width confidence bins), mean and standard deviation over the seeds, and fit
times.

Usage::

    python benchmarks/study_defaults.py                          # everything
    python benchmarks/study_defaults.py --testbeds fashion-tiny --candidates default,lbfgs

Rows are cached (``--rows``, a JSON-lines file in the test bed cache) so that an
interrupted study resumes; ``--fresh`` recomputes, ``--cached-only`` reports what the
cache holds without computing (e.g. after runs of parts of the grid). Results go to
``benchmarks/results/study_defaults_cmm.json`` (``--out``).
"""

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import log_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbeds  # noqa: E402

from sklearn_cmm._math.calibration import expected_calibration_error  # noqa: E402
from sklearn_cmm import (  # noqa: E402
    CrossModalMappingClassifier,
    SeMoBridgeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
)

OUT = Path(__file__).resolve().parent / "results" / "study_defaults_cmm.json"
SHOTS = (1, 2, 4, 8, 16)
SEEDS = (1, 2, 3)

#: The CMM configurations compared; "previous" is the defaults before the first study. The
#: first study (solver, budget, text, penalty) ran without the image-prototype term, the
#: second (``image-*``) compares its weight at the first study's choice.
_FIRST = {"image_weight": 0.0}
CANDIDATES = {
    "previous": {"solver": "adamw", "max_iter": 15, "train_text": False, **_FIRST},
    "lbfgs": {"solver": "lbfgs", "max_iter": "auto", "train_text": False, **_FIRST},
    "lbfgs-text": {"solver": "lbfgs", "max_iter": "auto", "train_text": True, **_FIRST},
    "lbfgs-text-a1e-3": {"solver": "lbfgs", "max_iter": "auto", "train_text": True,
                          "alpha": 1e-3, **_FIRST},
    "lbfgs-text-a1e-2": {"solver": "lbfgs", "max_iter": "auto", "train_text": True,
                          "alpha": 1e-2, **_FIRST},
    **{f"image-{w:g}": {"image_weight": w} for w in (0.0, 1.0, 2.0, 4.0)},
    "image-auto": {"image_weight": "auto"},
}
#: The reference methods, at their defaults (blends searched, ``search="cv"``).
BASELINES = {
    "zero-shot": (ZeroShotClassifier, "zero-shot", {}),
    "tip-adapter": (TipAdapterClassifier, "tip-adapter", {}),
    "semobridge": (SeMoBridgeClassifier, "semobridge", {}),
}


def make_estimator(method, params, bed):
    """The estimator of a candidate (``cmm:NAME``) or a baseline, with the test bed's text."""
    if method.startswith("cmm:"):
        return CrossModalMappingClassifier(device="cpu", **bed.text_kwargs("cmm"), **params)
    cls, text_kind, defaults = BASELINES[method]
    extra = {"device": "cpu"} if cls is SeMoBridgeClassifier else {}
    return cls(**bed.text_kwargs(text_kind), **defaults, **extra, **params)


def evaluate(method, params, bed, n_shots, seed):
    train, val, test = testbeds.split_shots(bed.y, n_shots, seed)
    est = make_estimator(method, params, bed)
    start = time.perf_counter()
    est.fit(bed.X[train], bed.y[train])
    fit_s = time.perf_counter() - start
    labels = np.arange(bed.n_classes)
    row = {"fit_s": round(fit_s, 3), "n_iter": getattr(est, "n_iter_", None)}
    for split, idx in (("val", val), ("test", test)):
        proba = est.predict_proba(bed.X[idx])
        y = bed.y[idx]
        row[f"{split}_top1"] = float(np.mean(proba.argmax(axis=1) == y))
        row[f"{split}_log_loss"] = float(log_loss(y, proba, labels=labels))
        if split == "test":
            row["test_ece"] = expected_calibration_error(y, proba)
    return row


def _key(bed, method, params, n_shots, seed):
    return json.dumps([bed, method, params, n_shots, seed], sort_keys=True)


def run(args):
    rows_path = Path(args.rows)
    cache = {}
    if rows_path.is_file() and not args.fresh:
        for line in rows_path.read_text().splitlines():
            record = json.loads(line)
            cache[record["key"]] = record
    methods = [(f"cmm:{name}", CANDIDATES[name]) for name in args.candidates]
    methods += [(name, {}) for name in args.baselines]
    rows = []
    with rows_path.open("a") as out:
        for bed_name in args.testbeds:
            bed = None if args.cached_only else testbeds.load_testbed(bed_name)
            for n_shots in args.shots:
                for seed in args.seeds:
                    for method, params in methods:
                        key = _key(bed_name, method, params, n_shots, seed)
                        if key not in cache and args.cached_only:
                            continue
                        if key not in cache:
                            record = {"key": key, "testbed": bed_name, "method": method,
                                      "params": params, "shots": n_shots, "seed": seed,
                                      **evaluate(method, params, bed, n_shots, seed)}
                            out.write(json.dumps(record) + "\n")
                            out.flush()
                            cache[key] = record
                            print(f"{bed_name} {n_shots}-shot seed {seed} {method}: val "
                                  f"{record['val_top1']:.3f} test {record['test_top1']:.3f} "
                                  f"({record['fit_s']:.2f} s, {record['n_iter']} it)",
                                  flush=True)
                        rows.append(cache[key])
    return rows


def summarize(rows, testbed_names, candidates):
    """Per test bed, method and shots: mean and std over seeds; and the chosen candidate."""
    table = {}
    for r in rows:
        cell = table.setdefault(r["testbed"], {}).setdefault(r["method"], {}).setdefault(
            str(r["shots"]), {"rows": []})
        cell["rows"].append(r)
    for bed in table.values():
        for method in bed.values():
            for cell in method.values():
                rs = cell.pop("rows")
                for metric in ("val_top1", "test_top1", "test_log_loss", "test_ece", "fit_s"):
                    values = np.array([r[metric] for r in rs], dtype=float)
                    cell[metric] = [float(values.mean()), float(values.std())]
                cell["n_iter"] = [r["n_iter"] for r in rs]
                cell["seeds"] = [r["seed"] for r in rs]
    # Selection on validation only: mean over test beds and shots of the seed-mean val top-1,
    # over the (test bed, shots) cells that every candidate has.
    present = [n for n in candidates if any(f"cmm:{n}" in table.get(b, {}) for b in testbed_names)]
    common = [
        (bed, shots) for bed in testbed_names for shots in table.get(bed, {}).get(
            f"cmm:{present[0]}", {}) if all(shots in table[bed].get(f"cmm:{n}", {})
                                           for n in present)
    ] if present else []
    scores = {
        n: float(np.mean([table[bed][f"cmm:{n}"][shots]["val_top1"][0] for bed, shots in common]))
        for n in present if common
    }
    chosen = max(scores, key=scores.get) if scores else None
    return table, scores, chosen


def print_table(table, chosen, shots):
    for bed, methods in table.items():
        print(f"\n== {bed}: test top-1 % (mean ± std over seeds); log-loss; ECE % ==")
        header = "method".ljust(28) + "".join(f"{s:>14}" for s in shots)
        print(header)
        for method, cells in methods.items():
            mark = " *" if method == f"cmm:{chosen}" else ""
            line = (method + mark).ljust(28)
            for s in shots:
                c = cells.get(str(s))
                line += (f"{100 * c['test_top1'][0]:8.1f}±{100 * c['test_top1'][1]:4.1f}"
                         if c else " " * 14)
            print(line)
            line = "  log-loss / ECE".ljust(28)
            for s in shots:
                c = cells.get(str(s))
                line += (f"{c['test_log_loss'][0]:8.2f}/{100 * c['test_ece'][0]:4.1f}"
                         if c else " " * 14)
            print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--testbeds", default=",".join(testbeds.TESTBEDS))
    parser.add_argument("--shots", default=",".join(map(str, SHOTS)))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--baselines", default=",".join(BASELINES))
    parser.add_argument("--rows", default=str(testbeds.CACHE_DIR / "study_rows.jsonl"))
    parser.add_argument("--fresh", action="store_true", help="ignore cached rows")
    parser.add_argument("--cached-only", action="store_true",
                        help="report the cached rows only, computing nothing")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    for name in ("testbeds", "candidates", "baselines"):
        setattr(args, name, [p for p in getattr(args, name).split(",") if p])
    args.shots = [int(p) for p in args.shots.split(",")]
    args.seeds = [int(p) for p in args.seeds.split(",")]
    torch.set_num_threads(1)
    testbeds.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    load = round(os.getloadavg()[0], 2)
    start = time.perf_counter()
    rows = run(args)
    table, scores, chosen = summarize(rows, args.testbeds, args.candidates)
    print_table(table, chosen, args.shots)
    print("\nvalidation top-1 of each candidate (mean over test beds and shots):")
    for name, score in sorted(scores.items(), key=lambda kv: -kv[1]):
        print(f"  {name:28} {100 * score:.2f}{'  <- chosen' if name == chosen else ''}")
    record = {
        "command": " ".join(["python", "benchmarks/study_defaults.py", *(argv or sys.argv[1:])]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": load,
        "wall_clock_s": round(time.perf_counter() - start, 1),
        "platform": platform.platform(), "torch_threads": 1,
        "testbeds": {name: testbeds.load_testbed(name).info for name in args.testbeds
                     if name in table},
        "candidates": {name: CANDIDATES[name] for name in args.candidates},
        "validation_score": scores, "chosen": chosen,
        "selection": "best validation top-1, mean over test beds and shots (seeds first)",
        "results": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
