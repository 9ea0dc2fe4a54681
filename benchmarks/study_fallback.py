"""SeMoBridge's fall-back to its zero-shot term: at which held-out score the search gives up.

``search="cv"`` scores every candidate blend on the training shots by leave-one-out. At
one shot a class, leaving a shot out leaves its class without an image prototype, so the
held-out shots judge the image terms at their worst, and on many classes the chosen blend
can be far below zero-shot on new images. The estimator falls back to its zero-shot term
when the best candidate scores at most ``FALLBACK_SCORE_RATIO`` (1/4) of the zero-shot
term's own held-out accuracy, or at most chance. For every test bed and seed this study
fits, on the training shots alone:

- ``searched``: the search with the chance guard alone (the ratio set to 0 for this fit),
  with its best held-out score and the zero-shot term's (the zero-shot classifier's
  accuracy on the shots: the same ranking on the same shots);
- ``fallback``: the zero-shot term as the estimator falls back to it (``search=None``,
  ``lambda2 = lambda3 = 0``);
- ``default``: the estimator at its defaults (the check that it does what the table
  says for 1/4);
- ``zero-shot``: :class:`~sklearn_cmm.ZeroShotClassifier`.

The table gives, per test bed, what each ratio would deploy (``fallback`` where the
searched score is at most ``max(chance, ratio * zero-shot score)``, else ``searched``):
top-1 % and log-loss on the validation draws (the choice) and the test images (the
report), mean over seeds, and how many seeds fall back. Run it on the four study beds
to choose, on :data:`testbeds.UNSEEN_TESTBEDS` to check that the choice transfers.

Usage::

    python benchmarks/study_fallback.py --testbeds fashion-tiny,fashion-tiny-b,synthetic-100,synthetic-1000 --seeds 1,2,3,4,5,6,7,8
    python benchmarks/study_fallback.py --testbeds unseen-50,unseen-200,unseen-30 --seeds 1,2,3,4,5,6,7,8 --out benchmarks/results/study_fallback_unseen.json

Results: ``benchmarks/results/study_fallback.json`` (``--out``).
"""

import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbeds  # noqa: E402

from sklearn_cmm import SeMoBridgeClassifier, ZeroShotClassifier, semobridge  # noqa: E402
from sklearn_cmm._math.search import MAX_HELD_OUT  # noqa: E402

# 1 shot of 100 classes: scikit-learn asks whether y is a regression target.
warnings.filterwarnings("ignore", message="The number of unique classes is greater")
warnings.filterwarnings("ignore", message="search='cv' found no blend")

FITS = ("searched", "fallback", "default", "zero-shot")
#: The ratios the table compares: 0 is the chance guard alone, inf always falls back.
RATIOS = (0.0, 0.125, semobridge.FALLBACK_SCORE_RATIO, 0.5, np.inf)
SPLITS = ("val", "test")


def _fits(bed, seed):
    text = bed.text_kwargs("semobridge")
    with mock.patch.object(semobridge, "FALLBACK_SCORE_RATIO", 0.0):
        yield "searched", SeMoBridgeClassifier(**text, random_state=seed)
    yield "fallback", SeMoBridgeClassifier(**text, random_state=seed, search=None,
                                           lambda2=0.0, lambda3=0.0)
    yield "default", SeMoBridgeClassifier(**text, random_state=seed)
    yield "zero-shot", ZeroShotClassifier(**bed.text_kwargs("zero-shot"))


def run(bed, names, shots_list, seeds):
    rows = []
    for shots, seed, (train, val, test), fitted in testbeds.split_fits(bed, _fits, shots_list,
                                                                       seeds):
        if len(train) > MAX_HELD_OUT:
            raise ValueError("the zero-shot score below is that of every shot; the "
                             f"search scores {MAX_HELD_OUT} of {len(train)}")
        row = {"testbed": bed.name, "shots": shots, "seed": seed, "chance": 1 / bed.n_classes}
        for name, clf in fitted:  # the searched fit runs inside its patch
            if name == "searched":
                row["search_score"] = clf.search_score_
            if name == "zero-shot":
                row["zero_shot_score"] = clf.score(bed.X[train], bed.y[train])
            for split, index in zip(SPLITS, (val, test)):
                row[f"{name} {split}_accuracy"], row[f"{name} {split}_log_loss"] = (
                    testbeds.top1_and_log_loss(clf, bed.X[index], bed.y[index]))
        row["ratio"] = row["search_score"] / row["zero_shot_score"]
        rows.append(row)
        print(f"{bed.name} {shots}-shot seed {seed}: held-out {row['search_score']:.3f}"
              f" / zero-shot {row['zero_shot_score']:.3f}; val "
              + ", ".join(f"{name} {100 * row[name + ' val_accuracy']:.2f}%"
                          for name in FITS), flush=True)
    return rows


def deployed(row, ratio):
    """The fit that ``ratio`` deploys for ``row``."""
    floor = max(row["chance"], ratio * row["zero_shot_score"])
    return "fallback" if row["search_score"] <= floor else "searched"


def table(rows, names, shots_list):
    lines = []
    for bed in dict.fromkeys(r["testbed"] for r in rows):
        for shots in shots_list:
            cell_rows = [r for r in rows if r["testbed"] == bed and r["shots"] == shots]
            if not cell_rows:
                continue
            lines.append(f"\n{bed}, {shots} shot(s), {len(cell_rows)} seeds: top-1 % / "
                         "log-loss, mean over seeds, validation | test")
            lines.append(f"{'fall back at':<22}{'validation':>16}{'test':>16}{'falls back':>12}")

            def line(label, pick):
                cells = [
                    f"{100 * np.mean([r[pick(r) + f' {s}_accuracy'] for r in cell_rows]):9.2f} /"
                    f"{np.mean([r[pick(r) + f' {s}_log_loss'] for r in cell_rows]):5.3f}"
                    for s in SPLITS]
                n_fallback = sum(pick(r) == "fallback" for r in cell_rows)
                return f"{label:<22}{cells[0]:>16}{cells[1]:>16}{n_fallback:>12}"

            for ratio in RATIOS:
                label = ("chance only" if ratio == 0 else "always" if ratio == np.inf
                         else f"ratio {ratio:g}")
                if ratio == semobridge.FALLBACK_SCORE_RATIO:
                    label += " (default)"
                lines.append(line(label, lambda r, ratio=ratio: deployed(r, ratio)))
            lines.append(line("zero-shot classifier", lambda r: "zero-shot"))
            lines.append("ratios (held-out score / zero-shot's): " + ", ".join(
                f"{r['ratio']:.3f}" for r in sorted(cell_rows, key=lambda r: r["ratio"])))
            mismatched = [r["seed"] for r in cell_rows
                          if r["default val_accuracy"] != r[deployed(
                              r, semobridge.FALLBACK_SCORE_RATIO) + " val_accuracy"]]
            if mismatched:
                lines.append(f"the default fit differs from the table's at seeds {mismatched}")
    return "\n".join(lines)


def main(argv=None):
    parser = testbeds.study_parser(__doc__, "study_fallback.json", shots="1")
    args = parser.parse_args(argv)
    return testbeds.run_study(args, FITS, run, table)


if __name__ == "__main__":
    raise SystemExit(main())
