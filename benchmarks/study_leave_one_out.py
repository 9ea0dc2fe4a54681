"""Leave-one-out on the shots: held-out shots left out of their own class or of every class.

SeMoBridge fits ``predict_proba``'s temperature, and Tip-Adapter searches its ``alpha`` and
``beta`` and fits its temperature, on leave-one-out scores of the training shots. Left out
of its own class only, a shot's class is the one prototype (or cache) built from a shot
fewer than the others, so its held-out score is understated against theirs, most at two
to four shots: SeMoBridge's temperature came out too flat, and Tip-Adapter's search weighed
the cache too little. Both now leave a shot out of every class
(:func:`~sklearn_cmm._math.basic.every_class_left_out`); SeMoBridge's blend search keeps the
own-class leave-one-out. For every test bed, shot count and seed this study fits, on the
training shots alone:

- ``semobridge own`` / ``tip-adapter own``: the former procedure (every-class leave-one-out
  patched out for this fit);
- ``semobridge`` / ``tip-adapter``: the estimators at their defaults;
- ``zero-shot``: :class:`~sklearn_cmm.ZeroShotClassifier`, the log-loss to stay below.

The table gives top-1 %, log-loss and expected calibration error (15 bins) on the
validation draws (the choice) and the test images (the report), mean over seeds.

Usage::

    python benchmarks/study_leave_one_out.py --testbeds fashion-tiny,fashion-tiny-b,synthetic-100 --shots 1,2,4,8,16 --seeds 1,2,3,4,5
    python benchmarks/study_leave_one_out.py --testbeds unseen-50,unseen-30,unseen-200 --shots 1,2,4,8,16 --seeds 1,2,3,4,5 --out benchmarks/results/study_leave_one_out_unseen.json

Results: ``benchmarks/results/study_leave_one_out.json`` (``--out``).
"""

import sys
import warnings
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbeds  # noqa: E402

from sklearn_cmm import (  # noqa: E402
    SeMoBridgeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
    baselines,
    semobridge,
)
from sklearn_cmm._math.calibration import expected_calibration_error  # noqa: E402

warnings.filterwarnings("ignore", message="The number of unique classes is greater")
warnings.filterwarnings("ignore", message="search='cv' found no blend")

FITS = ("semobridge own", "semobridge", "tip-adapter own", "tip-adapter", "zero-shot")
SPLITS = ("val", "test")
ECE_BINS = 15


def _own_class_only(function):
    return lambda *args, **kwargs: function(*args, **{**kwargs, "every_class": False})


def _fits(bed, seed):
    with mock.patch.object(semobridge, "loo_score_matrices",
                           _own_class_only(semobridge.loo_score_matrices)):
        yield "semobridge own", SeMoBridgeClassifier(**bed.text_kwargs("semobridge"),
                                                     random_state=seed)
    yield "semobridge", SeMoBridgeClassifier(**bed.text_kwargs("semobridge"), random_state=seed)
    with ExitStack() as patches:
        patches.enter_context(mock.patch.object(
            baselines, "loo_prototype_cosine", _own_class_only(baselines.loo_prototype_cosine)))
        patches.enter_context(mock.patch.object(
            TipAdapterClassifier, "_held_out_entries", TipAdapterClassifier._own_entries))
        yield "tip-adapter own", TipAdapterClassifier(**bed.text_kwargs("tip-adapter"),
                                                      random_state=seed)
    yield "tip-adapter", TipAdapterClassifier(**bed.text_kwargs("tip-adapter"), random_state=seed)
    yield "zero-shot", ZeroShotClassifier(**bed.text_kwargs("zero-shot"))


def run(bed, names, shots_list, seeds):
    rows = []
    for shots, seed, (_, val, test), fitted in testbeds.split_fits(bed, _fits, shots_list,
                                                                   seeds):
        row = {"testbed": bed.name, "shots": shots, "seed": seed}
        for name, clf in fitted:  # a patched fit runs inside its patch
            for split, index in zip(SPLITS, (val, test)):
                X, y = bed.X[index], bed.y[index]
                row[f"{name} {split}_accuracy"], row[f"{name} {split}_log_loss"] = (
                    testbeds.top1_and_log_loss(clf, X, y))
                row[f"{name} {split}_ece"] = float(expected_calibration_error(
                    np.searchsorted(clf.classes_, y), clf.predict_proba(X), ECE_BINS))
        rows.append(row)
        print(f"{bed.name} {shots}-shot seed {seed}: val top-1 / log-loss "
              + ", ".join(f"{name} {100 * row[name + ' val_accuracy']:.2f} / "
                          f"{row[name + ' val_log_loss']:.3f}" for name in FITS), flush=True)
    return rows


def table(rows, names, shots_list):
    lines = [f"{'test bed':<16}{'shots':>5}  {'fit':<17}{'top-1 % val|test':>18}"
             f"{'log-loss val|test':>19}{'ECE % val|test':>16}"]
    for bed in dict.fromkeys(r["testbed"] for r in rows):
        for shots in shots_list:
            cell = [r for r in rows if r["testbed"] == bed and r["shots"] == shots]
            for name in FITS if cell else ():
                def mean(split, what):
                    return np.mean([r[f"{name} {split}_{what}"] for r in cell])

                lines.append(
                    f"{bed:<16}{shots:>5}  {name:<17}"
                    f"{100 * mean('val', 'accuracy'):>9.2f}|{100 * mean('test', 'accuracy'):<8.2f}"
                    f"{mean('val', 'log_loss'):>10.3f}|{mean('test', 'log_loss'):<8.3f}"
                    f"{100 * mean('val', 'ece'):>8.1f}|{100 * mean('test', 'ece'):<7.1f}")
    return "\n".join(lines)


def main(argv=None):
    parser = testbeds.study_parser(__doc__, "study_leave_one_out.json",
                                   testbeds="fashion-tiny,fashion-tiny-b,synthetic-100",
                                   shots="1,2,4,8,16")
    args = parser.parse_args(argv)
    return testbeds.run_study(args, FITS, run, table)


if __name__ == "__main__":
    raise SystemExit(main())
