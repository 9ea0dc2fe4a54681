"""How far float32 rounding alone moves CMM's defaults: test top-1 with the features
multiplied by ``1 + k 2^-23`` (``k = 0..4``, a change in the last bit or two).

CMM's refinement is L-BFGS in float32, and its line search amplifies differences in the
last bit over tens of iterations, as a change of thread count or of the order of a sum
does. A code change that only reorders float32 arithmetic therefore moves single cells of
``check_defaults.py`` (one-shot cells most). This script measures that spread for the code
it runs, so that two versions can be compared on the same footing: run it on each (the
older one from a ``git worktree`` put first on ``PYTHONPATH``) and compare the cells' means
over seeds and multiplications, and the range of the per-multiplication means.

Usage::

    python benchmarks/check_rounding.py                       # fashion-tiny(-b), ~2 min
    PYTHONPATH=/tmp/oldtree python benchmarks/check_rounding.py --out /tmp/old.json
"""

import numpy as np
import testbeds
from sklearn_cmm import CrossModalMappingClassifier

#: The multiplications: features times ``1 + k 2^-23``.
STEPS = range(5)


def run(bed, names, shots_list, seeds):
    rows = []
    for k in STEPS:
        X = bed.X * (1 + k * 2.0**-23)
        for shots in shots_list:
            for seed in seeds:
                train, _, test = testbeds.split_shots(bed.y, shots, seed)
                clf = CrossModalMappingClassifier(**bed.text_kwargs("cmm"), random_state=seed)
                clf.fit(X[train], bed.y[train])
                accuracy = float(np.mean(clf.predict(X[test]) == bed.y[test]))
                rows.append({"testbed": bed.name, "method": "cmm", "variant": k,
                             "shots": shots, "seed": seed, "accuracy": accuracy})
                print(f"{bed.name} x(1 + {k} 2^-23) {shots}-shot seed {seed}: "
                      f"{100 * accuracy:.2f}%", flush=True)
    return rows


def table(rows, names, shots_list):
    lines = [f"{'test bed':<16}{'shots':>6}{'mean':>8}{'per-multiplication means':>28}"]
    for name in dict.fromkeys(row["testbed"] for row in rows):
        for shots in shots_list:
            cell = [row for row in rows if row["testbed"] == name and row["shots"] == shots]
            per_k = [np.mean([row["accuracy"] for row in cell if row["variant"] == k])
                     for k in sorted({row["variant"] for row in cell})]
            lines.append(f"{name:<16}{shots:>6}{100 * np.mean(per_k):>8.2f}"
                         f"{100 * min(per_k):>19.2f} - {100 * max(per_k):.2f}")
    return "\n".join(lines)


def main(argv=None):
    parser = testbeds.study_parser(__doc__, "check_rounding.json")
    args = parser.parse_args(argv)
    return testbeds.run_study(args, ["cmm"], run, table)


if __name__ == "__main__":
    raise SystemExit(main())
