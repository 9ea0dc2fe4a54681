"""SeMoBridge (closed form) against SeMoBridge-T variants on the test beds.

For every test bed, number of shots and seed, :func:`testbeds.split_shots` draws the
training shots, a disjoint validation draw of as many images a class, and the test set
(the rest). Each variant is fitted on the training shots alone (its own choices, such as
the blend search and the checkpoint, are made inside ``fit`` from those shots), then
scored on the validation draw and on the test set. Defaults are chosen by the validation
column only; the test columns are the report.

Variants (:data:`VARIANTS`): ``zero-shot``; ``semobridge`` (closed form, ``search="cv"``,
absolute cut-off 0.3); ``cutoff-*`` (the closed form with other pseudo-inverse cut-offs);
``t-*`` (SeMoBridge-T with ``search="cv"``: the package's defaults, and one change each).

Usage (one JSON per test bed, then the merged table)::

    python benchmarks/study_semobridge.py run fashion-tiny --variants all
    python benchmarks/study_semobridge.py table

Results: ``benchmarks/results/study_semobridge_<testbed>.json`` (one row per fit) and
``benchmarks/results/study_semobridge.json`` (the summary of all of them).
"""

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import warnings

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
# 1 shot of 100 or 1000 classes: scikit-learn asks whether y is a regression target.
warnings.filterwarnings("ignore", message="The number of unique classes is greater")

import torch  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402

from sklearn_cmm import SeMoBridgeClassifier, ZeroShotClassifier  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from testbeds import TESTBEDS, load_testbed, split_shots  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: The estimator's parameters of each variant (beyond the test bed's text).
VARIANTS = {
    "zero-shot": None,
    "semobridge": dict(search="cv"),
    "cutoff-abs0": dict(search="cv", pinv_cutoff=0.0),
    "cutoff-rel0.05": dict(search="cv", pinv_cutoff=0.05, pinv_cutoff_relative=True),
    "cutoff-rel0.1": dict(search="cv", pinv_cutoff=0.1, pinv_cutoff_relative=True),
    "cutoff-rel0.15": dict(search="cv", pinv_cutoff=0.15, pinv_cutoff_relative=True),
    "cutoff-rel0.25": dict(search="cv", pinv_cutoff=0.25, pinv_cutoff_relative=True),
    "semobridge-t": dict(search="cv", train=True),
    "t-scale100": dict(search="cv", train=True, image_logit_scale=100.0),
    "t-no-patience": dict(search="cv", train=True, n_iter_no_change=None),
    "t-iter300": dict(search="cv", train=True, max_iter=300),
    "t-no-early-stopping": dict(search="cv", train=True, early_stopping=False),
}
GROUPS = {
    "cutoff": ["zero-shot", "semobridge", "cutoff-abs0", "cutoff-rel0.05", "cutoff-rel0.1",
               "cutoff-rel0.15", "cutoff-rel0.25"],
    "t": ["zero-shot", "semobridge", "semobridge-t", "t-scale100", "t-no-patience",
          "t-iter300", "t-no-early-stopping"],
}


def make(variant, bed, seed):
    params = VARIANTS[variant]
    text = {"text_features": bed.prototypes, "text_encoder": None}
    if params is None:
        return ZeroShotClassifier(**text)
    return SeMoBridgeClassifier(
        **text, text_projection=bed.text_projection, random_state=seed, device="cpu",
        **params,
    )


def run(testbed, variants, shots_list, seeds, out):
    """Fit every (variant, shots, seed); rows appended to ``out`` as they finish."""
    torch.set_num_threads(1)
    bed = load_testbed(testbed)
    record = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    done = {(r["variant"], r["shots"], r["seed"]) for r in record["rows"]}
    X = bed.X.astype(np.float64)
    for shots in shots_list:
        for seed in seeds:
            train, val, test = split_shots(bed.y, shots, seed)
            for variant in variants:
                if (variant, shots, seed) in done:
                    continue
                start, cpu_start = time.perf_counter(), time.process_time()
                clf = make(variant, bed, seed).fit(X[train], bed.y[train])
                fit_s = time.perf_counter() - start
                row = {"variant": variant, "shots": shots, "seed": seed, "fit_s": fit_s,
                       "fit_cpu_s": time.process_time() - cpu_start,
                       "val_top1": clf.score(X[val], bed.y[val]),
                       "test_top1": clf.score(X[test], bed.y[test]),
                       "test_log_loss": log_loss(bed.y[test], clf.predict_proba(X[test]),
                                                 labels=np.arange(bed.n_classes))}
                for name in ["best_iter_", "n_iter_", "image_logit_scale_"]:
                    row[name] = getattr(clf, name, None)
                row["validation_scores"] = (
                    None if getattr(clf, "validation_scores_", None) is None
                    else clf.validation_scores_.round(4).tolist()
                )
                record["rows"].append(row)
                record.update(testbed=testbed, info=bed.info, machine=_machine())
                out.write_text(json.dumps(record, indent=1))
                print(f"{testbed} {variant:<20} {shots:>2} shots seed {seed}: "
                      f"val {row['val_top1']:.3f} test {row['test_top1']:.3f} "
                      f"fit {fit_s:.1f}s best_iter {row['best_iter_']}", flush=True)


def _machine():
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "cpus": os.cpu_count()}


def summarize(rows):
    """Mean and std over seeds of each (variant, shots)."""
    summary = {}
    for key in sorted({(r["variant"], r["shots"]) for r in rows}):
        mine = [r for r in rows if (r["variant"], r["shots"]) == key]
        entry = {"n_seeds": len(mine)}
        for metric in ["val_top1", "test_top1", "test_log_loss", "fit_s", "fit_cpu_s"]:
            values = [r.get(metric) for r in mine]
            entry[metric] = (None if None in values
                             else [float(np.mean(values)), float(np.std(values))])
        iters = [r["best_iter_"] for r in mine if r["best_iter_"] is not None]
        entry["best_iter"] = iters or None
        summary.setdefault(key[0], {})[key[1]] = entry
    return summary


def format_table(testbed, summary):
    shots_list = sorted({s for per in summary.values() for s in per})
    header = f"{'variant':<20}" + "".join(f"{str(s) + '-shot':>17}" for s in shots_list)
    lines = [f"{testbed}: test top-1 % (mean ± std over seeds) [validation top-1 %]; "
             "test log-loss and fit CPU seconds at the largest shot count", header,
             "-" * len(header)]
    order = [v for v in VARIANTS if v in summary]
    for variant in order:
        cells = ""
        for s in shots_list:
            e = summary[variant].get(s)
            cells += (f"{'-':>17}" if e is None else
                      f"{100 * e['test_top1'][0]:>7.2f}±{100 * e['test_top1'][1]:<4.2f}"
                      f"[{100 * e['val_top1'][0]:.1f}]")
        top = summary[variant][max(summary[variant])]
        loss = "-" if top["test_log_loss"] is None else f"{top['test_log_loss'][0]:.3f}"
        cpu = "-" if top["fit_cpu_s"] is None else f"{top['fit_cpu_s'][0]:.1f}"
        lines.append(f"{variant:<20}{cells}  ll {loss:>5}  fit {cpu} cpu-s")
    return "\n".join(lines)


def table(testbeds):
    merged = {"testbeds": {}}
    for testbed in testbeds:
        path = RESULTS / f"study_semobridge_{testbed}.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        summary = summarize(record["rows"])
        text = format_table(testbed, summary)
        print(text + "\n")
        merged["testbeds"][testbed] = {
            "summary": {v: {str(s): e for s, e in per.items()} for v, per in summary.items()},
            "table": text, "machine": record["machine"], "info": record["info"],
        }
    merged["command"] = "python benchmarks/study_semobridge.py table"
    (RESULTS / "study_semobridge.json").write_text(json.dumps(merged, indent=1))


def _list(text, cast=str):
    return [cast(part) for part in text.split(",") if part]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("testbed", choices=TESTBEDS)
    run_parser.add_argument("--variants", default="all",
                            help="comma-separated variants or groups (all, cutoff, t)")
    run_parser.add_argument("--shots", type=lambda t: _list(t, int), default=[1, 2, 4, 8, 16])
    run_parser.add_argument("--seeds", type=lambda t: _list(t, int), default=[1, 2, 3])
    table_parser = sub.add_parser("table")
    table_parser.add_argument("--testbeds", type=_list, default=list(TESTBEDS))
    args = parser.parse_args(argv)
    if args.action == "table":
        table(args.testbeds)
        return
    variants = []
    for name in _list(args.variants):
        names = list(VARIANTS) if name == "all" else GROUPS.get(name, [name])
        variants += [v for v in names if v not in variants]
    RESULTS.mkdir(exist_ok=True)
    run(args.testbed, variants, args.shots, args.seeds,
        RESULTS / f"study_semobridge_{args.testbed}.json")


if __name__ == "__main__":
    main()
