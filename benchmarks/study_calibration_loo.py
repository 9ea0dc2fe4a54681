"""SeMoBridge's temperature: held-out shots left out of their own class or of every class.

``predict_proba`` is ``softmax(logits / temperature_)`` with the temperature fitted on
leave-one-out logits of the training shots at the chosen blend. Left out of its own class
only, a shot's class is the one prototype built from a shot fewer than the others, so its
held-out logit is understated against theirs, most at two to four shots (at one shot the
class is empty, :doc:`calibration`, *Calibration at one shot*): the logits look less
certain than the model is on new images and the temperature comes out too flat. The
estimator now leaves a shot out of every class for the temperature
(``loo_prototype_cosine(..., every_class=True)``); the blend search keeps the own-class
leave-one-out. For every test bed, shot count and seed this study fits, on the training
shots alone:

- ``own class``: the temperature from the own-class leave-one-out (the former procedure;
  ``every_class`` forced to False for this fit);
- ``every class``: the estimator at its defaults;
- ``zero-shot``: :class:`~sklearn_cmm.ZeroShotClassifier`, the log-loss to stay below.

Both SeMoBridge fits search the same blend on the same shots, so their top-1 is the same;
the table gives log-loss and expected calibration error (15 bins) on the validation draws
(the choice) and the test images (the report), mean over seeds.

Usage::

    python benchmarks/study_calibration_loo.py --testbeds fashion-tiny,fashion-tiny-b,synthetic-100 --shots 1,2,4,8,16 --seeds 1,2,3,4,5
    python benchmarks/study_calibration_loo.py --testbeds unseen-50,unseen-30,unseen-200 --shots 1,2,4,8,16 --seeds 1,2,3,4,5 --out benchmarks/results/study_calibration_loo_unseen.json

Results: ``benchmarks/results/study_calibration_loo.json`` (``--out``).
"""

import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbeds  # noqa: E402

from sklearn_cmm import SeMoBridgeClassifier, ZeroShotClassifier, semobridge  # noqa: E402
from sklearn_cmm._math.calibration import expected_calibration_error  # noqa: E402

warnings.filterwarnings("ignore", message="The number of unique classes is greater")
warnings.filterwarnings("ignore", message="search='cv' found no blend")

FITS = ("own class", "every class", "zero-shot")
SPLITS = ("val", "test")
ECE_BINS = 15


def _fits(bed, seed):
    text = bed.text_kwargs("semobridge")
    original = semobridge.loo_score_matrices
    with mock.patch.object(semobridge, "loo_score_matrices",
                           lambda *a, **k: original(*a, **{**k, "every_class": False})):
        yield "own class", SeMoBridgeClassifier(**text, random_state=seed)
    yield "every class", SeMoBridgeClassifier(**text, random_state=seed)
    yield "zero-shot", ZeroShotClassifier(**bed.text_kwargs("zero-shot"))


def run(bed, names, shots_list, seeds):
    rows = []
    for shots, seed, (_, val, test), fitted in testbeds.split_fits(bed, _fits, shots_list,
                                                                   seeds):
        row = {"testbed": bed.name, "shots": shots, "seed": seed}
        for name, clf in fitted:  # the own-class fit runs inside its patch
            for split, index in zip(SPLITS, (val, test)):
                X, y = bed.X[index], bed.y[index]
                row[f"{name} {split}_accuracy"], row[f"{name} {split}_log_loss"] = (
                    testbeds.top1_and_log_loss(clf, X, y))
                row[f"{name} {split}_ece"] = float(expected_calibration_error(
                    np.searchsorted(clf.classes_, y), clf.predict_proba(X), ECE_BINS))
            if name != "zero-shot":
                row[f"{name} temperature"] = float(clf.temperature_)
        rows.append(row)
        print(f"{bed.name} {shots}-shot seed {seed}: val log-loss "
              + ", ".join(f"{name} {row[name + ' val_log_loss']:.3f}" for name in FITS),
              flush=True)
    return rows


def table(rows, names, shots_list):
    lines = [f"{'':24}" + "".join(f"{name:>26}" for name in FITS)]
    lines.append(f"{'test bed':<16}{'shots':>6}  " + "  log-loss val|test  ECE %" * 3)
    for bed in dict.fromkeys(r["testbed"] for r in rows):
        for shots in shots_list:
            cell = [r for r in rows if r["testbed"] == bed and r["shots"] == shots]
            if not cell:
                continue

            def mean(key):
                return np.mean([r[key] for r in cell])

            lines.append(f"{bed:<16}{shots:>6}  " + "".join(
                f"{mean(name + ' val_log_loss'):>11.3f}|{mean(name + ' test_log_loss'):.3f}"
                f"{100 * mean(name + ' val_ece'):>6.1f}|{100 * mean(name + ' test_ece'):<4.1f}"
                for name in FITS))
            same = all(r["own class val_accuracy"] == r["every class val_accuracy"]
                       for r in cell)
            if not same:
                lines.append("  (the two SeMoBridge fits differ in top-1: not the same blend)")
    return "\n".join(lines)


def main(argv=None):
    parser = testbeds.study_parser(__doc__, "study_calibration_loo.json",
                                   testbeds="fashion-tiny,fashion-tiny-b,synthetic-100",
                                   shots="1,2,4,8,16")
    args = parser.parse_args(argv)
    return testbeds.run_study(args, FITS, run, table)


if __name__ == "__main__":
    raise SystemExit(main())
