"""Every method at its defaults on the test beds: top-1 and log-loss, mean ± std over seeds.

The transfer check of the defaults: run it on a test bed no default was chosen on (e.g.
``fashion-tiny-b``, trained after the studies) to see whether the studies' conclusions
hold. Test images only (the validation draw of :func:`testbeds.split_shots` is unused);
the methods are fitted on the training shots with their default parameters and the test
bed's text given explicitly. Prints a table and writes JSON.

Usage::

    python benchmarks/check_defaults.py --testbeds fashion-tiny,fashion-tiny-b --shots 1,4,16
"""

import testbeds
from sklearn_cmm import (
    CrossModalMappingClassifier,
    SeMoBridgeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
)
from sklearn_cmm.protocol.report import mean_std

#: method -> (estimator, the testbed text kwargs it takes, parameters beyond the defaults)
METHODS = {
    "zero-shot": (ZeroShotClassifier, "zero-shot", {}),
    "tip-adapter": (TipAdapterClassifier, "tip-adapter", {}),
    "tip-adapter-f": (TipAdapterClassifier, "tip-adapter", {"train": True}),
    "cmm": (CrossModalMappingClassifier, "cmm", {}),
    "semobridge": (SeMoBridgeClassifier, "semobridge", {}),
    "semobridge-t": (SeMoBridgeClassifier, "semobridge", {"train": True}),
}


def run(bed, methods, shots_list, seeds):
    rows = []
    for shots, seed, method, (_, _, test), clf, fit_s in testbeds.fitted_variants(
            bed, METHODS, methods, shots_list, seeds):
        accuracy, loss = testbeds.top1_and_log_loss(clf, bed.X[test], bed.y[test])
        rows.append({
            "testbed": bed.name, "method": method, "shots": shots, "seed": seed,
            "accuracy": accuracy, "log_loss": loss, "fit_cpu_s": fit_s,
        })
        print(f"{bed.name} {method} {shots}-shot seed {seed}: "
              f"{100 * rows[-1]['accuracy']:.2f}% in {fit_s:.1f} CPU-s", flush=True)
    return rows


def table(rows, methods, shots_list):
    accuracy = mean_std(rows, ("testbed", "method", "shots"))
    loss = mean_std(rows, ("testbed", "method", "shots"), "log_loss")
    lines = []
    for name in dict.fromkeys(r["testbed"] for r in rows):
        lines.append(f"\n{name}: top-1 % (mean ± std over seeds) / log-loss")
        lines.append(f"{'method':<14}" + "".join(f"{str(s) + '-shot':>22}" for s in shots_list))
        for method in methods:
            cells = ""
            for s in shots_list:
                if (name, method, s) not in accuracy:  # not measured (e.g. too slow there)
                    cells += f"{'-':>22}"
                    continue
                mean, std, _ = accuracy[name, method, s]
                cells += f"{100 * mean:>10.2f} ± {100 * std:4.2f} /{loss[name, method, s][0]:5.2f}"
            lines.append(f"{method:<14}{cells}")
    return "\n".join(lines)


def main(argv=None):
    parser = testbeds.study_parser(__doc__, "check_defaults.json")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args(argv)
    return testbeds.run_study(args, args.methods.split(","), run, table)


if __name__ == "__main__":
    raise SystemExit(main())
