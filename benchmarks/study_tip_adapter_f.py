"""Tip-Adapter-F's training settings on the test beds, chosen on validation draws.

For every test bed, number of shots and seed, :func:`testbeds.split_shots` draws the
training shots, a disjoint validation draw (32 images a class) and the test set (the
rest). Each variant is fitted on the training shots alone (its own choices, the decision
to train and the weights, are made inside ``fit`` from those shots), then scored on the
validation draw and on the test set. Defaults are chosen by the validation column; the
test columns are the report.

Variants (:data:`VARIANTS`): ``tip-adapter`` (training-free, ``search="cv"``),
``tip-adapter-f`` (``train=True``, ``search="cv"``, the defaults) and one change each:
``iter20`` / ``iter300`` (``max_iter``), ``lr3e-3`` (``learning_rate``), ``folds2`` (two
validation folds instead of four).

Usage::

    python benchmarks/study_tip_adapter_f.py --testbeds fashion-tiny,synthetic-100

Results: ``benchmarks/results/study_tip_adapter_f.json`` (one row per fit and the table).
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from sklearn_cmm import TipAdapterClassifier, baselines  # noqa: E402
from sklearn_cmm.protocol.report import mean_std  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbeds  # noqa: E402

#: variant -> (estimator parameters, number of validation folds)
VARIANTS = {
    "tip-adapter": ({"search": "cv"}, None),
    "tip-adapter-f": ({"search": "cv", "train": True}, None),
    "iter20": ({"search": "cv", "train": True, "max_iter": 20}, None),
    "iter300": ({"search": "cv", "train": True, "max_iter": 300}, None),
    "lr3e-3": ({"search": "cv", "train": True, "learning_rate": 3e-3}, None),
    "folds2": ({"search": "cv", "train": True}, 2),
}


def run(bed, variants, shots_list, seeds):
    rows = []
    default_folds = baselines.N_VALIDATION_FOLDS
    for shots in shots_list:
        for seed in seeds:
            train, val, test = testbeds.split_shots(bed.y, shots, seed)
            for variant in variants:
                params, n_folds = VARIANTS[variant]
                baselines.N_VALIDATION_FOLDS = n_folds or default_folds
                clf = TipAdapterClassifier(**bed.text_kwargs("tip-adapter"), random_state=seed,
                                           **params)
                start = time.process_time()
                clf.fit(bed.X[train], bed.y[train])
                rows.append({
                    "testbed": bed.name, "variant": variant, "shots": shots, "seed": seed,
                    "val": float(clf.score(bed.X[val], bed.y[val])),
                    "test": float(clf.score(bed.X[test], bed.y[test])),
                    "best_iter": clf.best_iter_, "fit_cpu_s": time.process_time() - start,
                    "load": os.getloadavg()[0],
                })
                baselines.N_VALIDATION_FOLDS = default_folds
                print(rows[-1], flush=True)
    return rows


def table(rows, variants, shots_list):
    lines = []
    columns = {c: mean_std(rows, ("testbed", "variant", "shots"), c) for c in ("val", "test")}
    cpu = mean_std(rows, ("testbed", "variant", "shots"), "fit_cpu_s")
    for name in dict.fromkeys(r["testbed"] for r in rows):
        lines.append(f"\n{name}: top-1 % validation [test] (mean ± std over seeds), CPU s")
        lines.append(f"{'variant':<14}" + "".join(f"{str(s) + '-shot':>30}" for s in shots_list))
        for variant in variants:
            cells = ""
            for s in shots_list:
                (v, vs, _), (t, ts, _) = (columns[c][name, variant, s] for c in ("val", "test"))
                cells += (f"{100 * v:>7.2f}±{100 * vs:4.2f} [{100 * t:5.2f}±{100 * ts:4.2f}]"
                          f"{cpu[name, variant, s][0]:>6.1f}")
            lines.append(f"{variant:<14}{cells}")
    return "\n".join(lines)


def main(argv=None):
    parser = testbeds.study_parser(__doc__, "study_tip_adapter_f.json",
                                   testbeds="fashion-tiny,synthetic-100", shots="4,16")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    return testbeds.run_study(args, args.variants.split(","), run, table)


if __name__ == "__main__":
    raise SystemExit(main())
