"""Augmented views of the training shots on the fashion test beds: averaged, or as extra shots.

Each method of ``check_defaults.py`` at its defaults is fitted on the training shots of a
draw (:func:`testbeds.split_shots`, seeds 1-3) embedded five ways, and scored on the
validation draw and the test images (never augmented):

``none``
    The shots as they are (the test bed's features).
``flip-mean``, ``crop-mean``
    ``CLIPFeaturizer(train_views=k).fit_transform``: each shot's embedding averaged with
    its mirror image (k=1) or with 10 random resized crops + flips (the authors' views);
    the package's option.
``flip-shots``, ``crop-shots``
    The same views as extra shots of their class (what SeMoBridge-T's authors do): the
    image and its views side by side (``view_output="columns"``) and the classifier's
    ``n_views``, so that what it validates on the shots holds out whole images.

Prints a table per test bed and writes JSON (``results/study_views.json``).

Usage::

    python benchmarks/study_views.py --testbeds fashion-tiny,fashion-tiny-b
"""

import os
import time

import numpy as np
from PIL import Image

import testbeds
from check_defaults import METHODS
from sklearn_cmm.bundled import load_fashion_mnist_sample
from sklearn_cmm.protocol.report import mean_std

#: variant -> (augmentation, views per image)
VIEWS = {"flip": ("flip", 1), "crop": ("crop_flip", 10)}
VARIANTS = ("none", "flip-mean", "crop-mean", "flip-shots", "crop-shots")


def training_sets(bed, featurizer, images, train, seed):
    """variant -> (X, y, n_views) of the training shots ``train``."""
    X, y = bed.X[train], bed.y[train]
    sets = {"none": (X, y, 1)}
    pil = [Image.fromarray(images[i]) for i in train]
    for name, (augmentation, n_views) in VIEWS.items():
        featurizer.set_params(train_views=n_views, augmentation=augmentation, random_state=seed)
        for layout, variant, views_per_row in (("mean", "mean", 1),
                                               ("columns", "shots", 1 + n_views)):
            X_views = featurizer.set_params(view_output=layout).fit_transform(pil)
            sets[f"{name}-{variant}"] = (np.asarray(X_views), y, views_per_row)
    return sets


def run(name, methods, shots_list, seeds):
    bed = testbeds.load_testbed(name)
    featurizer = testbeds.fashion_featurizer(name).fit(None)
    images = load_fashion_mnist_sample().images
    rows = []
    for shots in shots_list:
        for seed in seeds:
            train, val, test = testbeds.split_shots(bed.y, shots, seed)
            sets = training_sets(bed, featurizer, images, train, seed)
            for variant, (X, y, n_views) in sets.items():
                for method in methods:
                    estimator, text_of, params = METHODS[method]
                    clf = estimator(**bed.text_kwargs(text_of), random_state=seed,
                                    n_views=n_views, **params)
                    start = time.process_time()
                    clf.fit(X, y)

                    def accuracy(index):  # unaugmented images, as many columns as X
                        return float(np.mean(clf.predict(np.tile(bed.X[index], n_views))
                                             == bed.y[index]))

                    rows.append({
                        "testbed": name, "method": method, "variant": variant,
                        "shots": shots, "seed": seed,
                        "val_accuracy": accuracy(val), "accuracy": accuracy(test),
                        "fit_cpu_s": time.process_time() - start,
                        "load": os.getloadavg()[0],
                    })
            print(f"{name} {shots}-shot seed {seed} done", flush=True)
    return rows


def table(rows, methods, shots_list):
    val = mean_std(rows, ("testbed", "method", "variant", "shots"), "val_accuracy")
    test = mean_std(rows, ("testbed", "method", "variant", "shots"))
    lines = []
    for name in dict.fromkeys(r["testbed"] for r in rows):
        lines.append(f"\n{name}: top-1 % validation / test (mean over seeds)")
        lines.append(f"{'method':<14}{'variant':<12}"
                     + "".join(f"{str(s) + '-shot':>16}" for s in shots_list))
        for method in methods:
            for variant in VARIANTS:
                cells = "".join(f"{100 * val[name, method, variant, s][0]:>9.2f} /"
                                f"{100 * test[name, method, variant, s][0]:5.1f}"
                                for s in shots_list)
                lines.append(f"{method:<14}{variant:<12}{cells}")
    return "\n".join(lines)


def main(argv=None):
    parser = testbeds.study_parser(__doc__, "study_views.json")
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m != "zero-shot"))
    args = parser.parse_args(argv)
    return testbeds.run_study(args, args.methods.split(","), run, table,
                              load=lambda name: name, views=VIEWS)


if __name__ == "__main__":
    raise SystemExit(main())
