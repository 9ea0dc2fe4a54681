"""The default of ``search``: the authors' fixed blend (None) against ``search="cv"``.

Tip-Adapter and SeMoBridge blend their terms with weights (``alpha``/``beta``; ``alpha``,
``beta``, ``gamma``, ``smoothness``) that ``search="cv"`` chooses on the training shots
(leave-one-out, or validation folds when trained); ``search=None`` keeps the authors'
first trial. For every test bed, shot count and seed, :func:`testbeds.split_shots` draws
the training shots, a disjoint validation draw (32 images a class) and the test set;
each variant is fitted on the training shots alone, with the test bed's text given
explicitly, and scored (top-1 and log-loss) on the validation draw and on the test
images. The default is chosen on the validation columns; the test columns are the report.

Usage::

    python benchmarks/study_search.py --testbeds fashion-tiny,fashion-tiny-b,synthetic-100

Results: ``benchmarks/results/study_search.json`` (``--out``).
"""

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbeds  # noqa: E402

from sklearn_cmm import SeMoBridgeClassifier, TipAdapterClassifier, ZeroShotClassifier  # noqa: E402
from sklearn_cmm.protocol.report import mean_std  # noqa: E402

# 1 shot of 100 classes: scikit-learn asks whether y is a regression target.
warnings.filterwarnings("ignore", message="The number of unique classes is greater")

#: variant -> (estimator, the test bed text it takes, its parameters)
VARIANTS = {
    "zero-shot": (ZeroShotClassifier, "zero-shot", {}),
    "tip-adapter none": (TipAdapterClassifier, "tip-adapter", {"search": None}),
    "tip-adapter cv": (TipAdapterClassifier, "tip-adapter", {"search": "cv"}),
    "tip-adapter-f none": (TipAdapterClassifier, "tip-adapter", {"search": None, "train": True}),
    "tip-adapter-f cv": (TipAdapterClassifier, "tip-adapter", {"search": "cv", "train": True}),
    "semobridge none": (SeMoBridgeClassifier, "semobridge", {"search": None}),
    "semobridge cv": (SeMoBridgeClassifier, "semobridge", {"search": "cv"}),
    "semobridge-t none": (SeMoBridgeClassifier, "semobridge", {"search": None, "train": True}),
    "semobridge-t cv": (SeMoBridgeClassifier, "semobridge", {"search": "cv", "train": True}),
}
SPLITS = ("val", "test")


def run(bed, variants, shots_list, seeds):
    rows = []
    for shots, seed, variant, (_, val, test), clf, fit_s in testbeds.fitted_variants(
            bed, VARIANTS, variants, shots_list, seeds):
        row = {"testbed": bed.name, "variant": variant, "shots": shots, "seed": seed,
               "fit_cpu_s": fit_s}
        for split, index in zip(SPLITS, (val, test)):
            row[f"{split}_accuracy"], row[f"{split}_log_loss"] = (
                testbeds.top1_and_log_loss(clf, bed.X[index], bed.y[index]))
        rows.append(row)
        print(f"{bed.name} {variant} {shots}-shot seed {seed}: val "
              f"{100 * row['val_accuracy']:.2f}% / test {100 * row['test_accuracy']:.2f}%"
              f" in {row['fit_cpu_s']:.1f} CPU-s", flush=True)
    return rows


def table(rows, variants, shots_list):
    keys = ("testbed", "variant", "shots")
    stats = {(split, metric): mean_std(rows, keys, f"{split}_{metric}")
             for split in SPLITS for metric in ("accuracy", "log_loss")}
    lines = []
    for name in dict.fromkeys(r["testbed"] for r in rows):
        lines.append(f"\n{name}: top-1 % / log-loss, mean over seeds, validation | test")
        lines.append(f"{'variant':<20}" + "".join(f"{str(s) + '-shot':>30}" for s in shots_list))
        for variant in variants:
            cells = ""
            for s in shots_list:
                cell = " | ".join(
                    f"{100 * stats[split, 'accuracy'][name, variant, s][0]:5.1f}/"
                    f"{stats[split, 'log_loss'][name, variant, s][0]:5.2f}" for split in SPLITS)
                cells += f"{cell:>30}"
            lines.append(f"{variant:<20}{cells}")
    return "\n".join(lines)


def main(argv=None):
    parser = testbeds.study_parser(__doc__, "study_search.json",
                                   testbeds="fashion-tiny,fashion-tiny-b,synthetic-100")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    return testbeds.run_study(args, args.variants.split(","), run, table)


if __name__ == "__main__":
    raise SystemExit(main())
