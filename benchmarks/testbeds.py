"""Test beds for choosing defaults: features, labels and text of a few few-shot problems.

:func:`load_testbed` returns, for a test bed name, what a study of the methods needs
(:class:`Testbed`); :func:`split_shots` draws the training shots, a disjoint validation
draw and the test set (the rest). Every default is chosen on the validation draws only
and reported on the test sets.

Test beds (:data:`TESTBEDS`):

``"fashion-tiny"``
    The bundled model ``sklearn-cmm-fashion-tiny`` on the 5000 bundled held-out
    Fashion-MNIST images (10 classes, 64-d), with the demo's class names and templates.
``"fashion-tiny-b"``
    A second tiny model, trained with another seed and another caption regime (t-shirt,
    coat and dress captioned by synonyms only, instead of pullover, sneaker and shirt),
    on the same held-out images (its training images come from Fashion-MNIST's training
    split, the held-out ones from the test split). Train it once with
    :func:`train_fashion_tiny_b` (``python benchmarks/testbeds.py train-b``, about 10
    minutes on one CPU thread).
``"synthetic-100"``, ``"synthetic-1000"``
    The protocol's real-shaped synthetic features
    (:func:`sklearn_cmm.protocol.synthetic.synthetic_problem`, ImageNet's difficulty),
    512-d, 100 and 1000 classes, with a text projection and pre-projection features.
``"unseen-50"``, ``"unseen-200"``, ``"unseen-30"`` (:data:`UNSEEN_TESTBEDS`)
    Generated the same way with other generator seeds, class counts (50, 200, 30),
    dimension (256 for ``unseen-200``) and difficulty (easier for ``unseen-200``, harder
    for ``unseen-30``): for checking that a choice made on the four beds above transfers.

The fashion features are computed once and cached as ``.npz`` files in
:data:`CACHE_DIR` (``$SKLEARN_CMM_TESTBED_CACHE``, default
``/tmp/sklearn_cmm_testbeds``), as is model B. Nothing there is committed.

Usage::

    python benchmarks/testbeds.py train-b     # model B into the cache (background-friendly)
    python benchmarks/testbeds.py show        # one line per test bed (builds the caches)
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sklearn_cmm.model_selection import draw_shots

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Where featurised test beds and model B live (not committed).
CACHE_DIR = Path(os.environ.get("SKLEARN_CMM_TESTBED_CACHE", "/tmp/sklearn_cmm_testbeds"))
TESTBEDS = ("fashion-tiny", "fashion-tiny-b", "synthetic-100", "synthetic-1000")
#: Model B's caption regime: these classes' captions never use their zero-shot name.
B_SYNONYM_ONLY_CLASSES = ("t-shirt", "coat", "dress")
B_SEED = 1
#: Synthetic test beds: :func:`~sklearn_cmm.protocol.synthetic.synthetic_problem`'s
#: arguments (defaults: 512-d, ImageNet's difficulty ``sigma=1.1, tau=0.9``, generator
#: seed 0) and ``pool``, the images per class (training, validation and test shots).
SYNTHETIC = {
    "synthetic-100": {"n_classes": 100, "pool": 132},
    "synthetic-1000": {"n_classes": 1000, "pool": 64},
    "unseen-50": {"n_classes": 50, "pool": 96, "seed": 7},
    "unseen-200": {"n_classes": 200, "pool": 96, "dim": 256, "sigma": 0.8, "tau": 0.7,
                   "seed": 11},
    "unseen-30": {"n_classes": 30, "pool": 96, "sigma": 1.3, "tau": 1.1, "seed": 3},
}
#: Generated beds no default was chosen on, for checking that a choice transfers: other
#: generator seeds, class counts, dimension and difficulty (not in :data:`TESTBEDS`).
UNSEEN_TESTBEDS = ("unseen-50", "unseen-200", "unseen-30")
#: Bump when the cached arrays' content changes.
CACHE_VERSION = 1


@dataclass
class Testbed:
    """The arrays of one test bed.

    Attributes
    ----------
    name : str
    X : ndarray of shape (n_samples, dim), float32
        Image features (raw, not normalised).
    y : ndarray of shape (n_samples,), int64
        Labels ``0 .. n_classes - 1``.
    class_names : list of str
    prototypes : ndarray of shape (n_classes, dim), float32
        Unit class text prototypes (the prompt ensemble), row ``c`` for label ``c``.
    text_projection : ndarray of shape (width, dim) or None
        CLIP's text projection.
    pre_projection : ndarray of shape (n_classes, width) or None
        Mean over prompts of the text features before ``text_projection``.
    logit_scale : float or None
        The model's learned logit scale, when known.
    info : dict
        Provenance (model, files, sizes).
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    class_names: list
    prototypes: np.ndarray
    text_projection: np.ndarray | None
    pre_projection: np.ndarray | None
    logit_scale: float | None
    info: dict

    @property
    def n_classes(self):
        return len(self.class_names)

    def text_kwargs(self, method):
        """Constructor arguments giving ``method`` this test bed's text explicitly.

        Every method gets ``text_features=prototypes`` and ``text_encoder=None``;
        ``"semobridge"`` also gets ``text_projection`` when known (it derives the
        pre-projection features from the prototypes through it).
        """
        kwargs = {"text_features": self.prototypes, "text_encoder": None}
        if method == "semobridge" and self.text_projection is not None:
            kwargs["text_projection"] = self.text_projection
        return kwargs


#: Validation images per class: a fixed number, so that the selection is equally precise
#: at every shot count (with as many as there are shots, a 1-shot validation draw of a
#: 10-class test bed is 10 images).
N_VAL_SHOTS = 32


def split_shots(y, n_shots, seed, n_val_shots=N_VAL_SHOTS):
    """Training shots, a disjoint validation draw and the test set (all the rest).

    Parameters
    ----------
    y : ndarray of shape (n_samples,)
    n_shots : int
        Training samples per class.
    seed : int
        Seed of both draws.
    n_val_shots : int
        Validation samples per class (:data:`N_VAL_SHOTS`).

    Returns
    -------
    train, val, test : ndarray of int
        Sorted, pairwise disjoint indices into ``y``.
    """
    rng = np.random.RandomState(seed)
    train, rest = draw_shots(y, n_shots, random_state=rng)
    val_in_rest, test_in_rest = draw_shots(y[rest], n_val_shots, random_state=rng)
    return train, rest[val_in_rest], rest[test_in_rest]


# ----------------------------------------------------------------------------- fashion


def _b_dir(cache_dir):
    return Path(cache_dir) / "fashion-tiny-b-model"


def _b_weights(cache_dir):
    from sklearn_cmm.bundled import BUNDLED_MODEL

    return _b_dir(cache_dir) / f"{BUNDLED_MODEL}.safetensors"


def train_fashion_tiny_b_command(cache_dir=CACHE_DIR):
    """The ``tools/train_tiny_clip.py`` command line that trains model B."""
    bundled_npz = REPO_ROOT / "sklearn_cmm" / "_bundled" / "fashion_mnist_test.npz"
    return [
        sys.executable, str(REPO_ROOT / "tools" / "train_tiny_clip.py"),
        "--seed", str(B_SEED),
        "--synonym-only-classes", *B_SYNONYM_ONLY_CLASSES,
        "--test-indices-from", str(bundled_npz),
        "--out-dir", str(_b_dir(cache_dir)),
        "--threads", "1",
    ]


def train_fashion_tiny_b(cache_dir=CACHE_DIR):
    """Train model B into ``cache_dir`` (about 10 minutes on one CPU thread)."""
    _b_dir(cache_dir).mkdir(parents=True, exist_ok=True)
    subprocess.run(train_fashion_tiny_b_command(cache_dir), check=True)


def fashion_featurizer(name, cache_dir=CACHE_DIR, **params):
    """The featurizer of fashion test bed ``name`` (model A or B, on the CPU), unfitted.

    ``params`` are further :class:`~sklearn_cmm.CLIPFeaturizer` parameters. Its images
    are ``sklearn_cmm.bundled.load_fashion_mnist_sample().images``, rows of the test
    bed's ``X``.
    """
    from sklearn_cmm import CLIPFeaturizer
    from sklearn_cmm.bundled import BUNDLED_MODEL

    if name == "fashion-tiny":
        pretrained = "bundled"
    else:
        weights = _b_weights(cache_dir)
        if not weights.is_file():
            raise FileNotFoundError(
                f"Model B ({weights}) is not trained yet; run\n    "
                + " ".join(train_fashion_tiny_b_command(cache_dir))
            )
        pretrained = str(weights)
    return CLIPFeaturizer(BUNDLED_MODEL, pretrained=pretrained, device="cpu", **params)


def _weights_digest(name, cache_dir):
    """The first 12 hex digits of the SHA-256 of fashion test bed ``name``'s weights."""
    from sklearn_cmm.bundled import BUNDLED_MODEL

    weights = (REPO_ROOT / "sklearn_cmm" / "_bundled" / f"{BUNDLED_MODEL}.safetensors"
               if name == "fashion-tiny" else _b_weights(cache_dir))
    if not weights.is_file():
        fashion_featurizer(name, cache_dir)  # says how to train model B
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:12]


def _featurize_fashion(name, cache_dir):
    """Features and text of the bundled held-out images under model A or B."""
    from sklearn_cmm.bundled import BUNDLED_MODEL, load_fashion_mnist_sample

    data = load_fashion_mnist_sample()
    featurizer = fashion_featurizer(name, cache_dir)
    if name == "fashion-tiny":
        record = REPO_ROOT / "sklearn_cmm" / "_bundled" / f"{BUNDLED_MODEL}.train.json"
    else:
        record = _b_dir(cache_dir) / f"{BUNDLED_MODEL}.train.json"
        with np.load(_b_dir(cache_dir) / "fashion_mnist_test.npz") as npz:
            if not np.array_equal(npz["labels"], data.target):
                raise ValueError("Model B was evaluated on other held-out images.")
    X = featurizer.fit_transform(data.images).astype(np.float32)
    encoder = featurizer.text_encoder()
    prompts = [t.format(c) for c in data.target_names for t in data.templates]
    shape = (len(data.target_names), len(data.templates), -1)
    per_prompt = np.asarray(encoder.encode_text(prompts), dtype=np.float64).reshape(shape)
    per_prompt /= np.linalg.norm(per_prompt, axis=-1, keepdims=True)
    prototypes = per_prompt.mean(axis=1)
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    pre = np.asarray(encoder.encode_text_pre_projection(prompts), dtype=np.float64)
    train_record = json.loads(Path(record).read_text())
    return {
        "X": X,
        "y": data.target.astype(np.int64),
        "class_names": np.asarray(data.target_names),
        "prototypes": prototypes.astype(np.float32),
        "text_projection": np.asarray(encoder.text_projection, dtype=np.float32),
        "pre_projection": pre.reshape(shape).mean(axis=1).astype(np.float32),
        "logit_scale": np.float64(train_record["logit_scale"]),
        "info": json.dumps({
            "model": BUNDLED_MODEL, "pretrained": featurizer.pretrained,
            "train_command": train_record["command"],
            "synonym_only_classes": train_record["captions"].get(
                "synonym_only_classes", ["pullover", "sneaker", "shirt"]),
            "zero_shot_top1_in_training_record": train_record["zero_shot"]["top1"],
            "n_images": len(X),
        }),
    }


def _synthetic(name):
    from sklearn_cmm.protocol.synthetic import synthetic_problem

    spec = {"dim": 512, "sigma": 1.1, "tau": 0.9, "seed": 0, **SYNTHETIC[name]}
    n_classes, pool = spec.pop("n_classes"), spec.pop("pool")
    # One pool per class (the generator's train and test draws pooled), split by seed.
    arrays = synthetic_problem(n_classes, 32, pool - 32, **spec)
    X = np.concatenate([arrays["train_features"], arrays["test_features"]])
    y = np.concatenate([arrays["train_labels"], arrays["test_labels"]]).astype(np.int64)
    return Testbed(
        name=name, X=X, y=y,
        class_names=[f"class {i}" for i in range(n_classes)],
        prototypes=arrays["text_features"].astype(np.float32),
        text_projection=arrays["text_projection"],
        pre_projection=arrays["pre_projection_text_features"],
        logit_scale=None,
        info={"generator": "sklearn_cmm.protocol.synthetic.synthetic_problem",
              "n_classes": n_classes, "images_per_class": pool, **spec},
    )


def load_testbed(name, cache_dir=CACHE_DIR):
    """The arrays of test bed ``name`` (one of :data:`TESTBEDS`).

    Parameters
    ----------
    name : str
    cache_dir : path-like
        Where the fashion features are cached (built on first use).

    Returns
    -------
    Testbed
    """
    if name in SYNTHETIC:
        return _synthetic(name)
    if name not in ("fashion-tiny", "fashion-tiny-b"):
        raise ValueError(
            f"Unknown test bed {name!r}; choose from {TESTBEDS + UNSEEN_TESTBEDS}.")
    # named by the weights' digest too: a retrained model B is another test bed
    path = Path(cache_dir) / f"{name}.v{CACHE_VERSION}.{_weights_digest(name, cache_dir)}.npz"
    if not path.is_file():
        arrays = _featurize_fashion(name, cache_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    with np.load(path) as npz:
        return Testbed(
            name=name, X=npz["X"], y=npz["y"],
            class_names=[str(c) for c in npz["class_names"]],
            prototypes=npz["prototypes"], text_projection=npz["text_projection"],
            pre_projection=npz["pre_projection"], logit_scale=float(npz["logit_scale"]),
            info=json.loads(str(npz["info"])),
        )


# ----------------------------------------------------------------------------- studies


def study_parser(doc, out_name, *, testbeds="fashion-tiny,fashion-tiny-b", shots="1,4,16"):
    """A study script's argument parser: ``--testbeds``, ``--shots``, ``--seeds``, ``--out``.

    ``doc``'s first paragraph is the description; the JSON goes to
    ``benchmarks/results/out_name`` unless ``--out`` says otherwise.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--testbeds", default=testbeds)
    parser.add_argument("--shots", default=shots)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / out_name)
    parser.add_argument(
        "--update", action="store_true",
        help="replace in --out only the rows this run measures (same test bed, method or "
             "variant, shots and seed), keep the others and rebuild the table from all")
    return parser


def int_list(text):
    """``"1,4,16"`` as ``[1, 4, 16]``."""
    return [int(item) for item in text.split(",")]


#: What identifies a study's row (a cell and seed); the other keys are its measurements.
ROW_KEYS = ("testbed", "method", "variant", "shots", "seed")


def _row_key(row):
    return tuple(row.get(key) for key in ROW_KEYS)


def _command():
    return " ".join(["python", *sys.argv])


def report_study(args, rows, text, **extra):
    """Print a study's table and write its rows, table and run environment as JSON."""
    from sklearn_cmm.protocol.report import run_environment, write_json

    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {**run_environment(), "shots": int_list(args.shots),
                          "seeds": int_list(args.seeds), **extra, "rows": rows, "table": text,
                          "commands": [_command()]})


def _updated_study(args, rows, table):
    """``args.out``'s record with ``rows`` in place of the rows they measure again; the
    others, the first run's environment and every run's command are kept."""
    from sklearn_cmm.protocol.report import run_environment

    record = json.loads(args.out.read_text())
    new = {_row_key(row): row for row in rows}
    old = {_row_key(row) for row in record["rows"]}
    merged = ([new.get(_row_key(row), row) for row in record["rows"]]  # in place: same order
              + [row for key, row in new.items() if key not in old])
    names = list(dict.fromkeys(row.get("method", row.get("variant")) for row in merged))
    shots = sorted({row["shots"] for row in merged})
    record.update(
        rows=merged, table=table(merged, names, shots), shots=shots,
        seeds=sorted({row["seed"] for row in merged}),
        commands=[*record.get("commands", []), _command()],
        updated=[*record.get("updated", []), run_environment()["date"]],
    )
    return record


def top1_and_log_loss(clf, X, y):
    """Top-1 accuracy and log-loss of a fitted classifier's ``predict_proba`` on ``X, y``."""
    from sklearn.metrics import log_loss

    proba = clf.predict_proba(X)
    return (float(np.mean(clf.classes_[proba.argmax(1)] == y)),
            float(log_loss(y, proba, labels=clf.classes_)))


def split_fits(bed, fits, shots_list, seeds):
    """For every shot count and seed, its :func:`split_shots` and its fits.

    Yields ``shots, seed, (train, val, test)`` and a generator of ``(name, estimator)``
    over ``fits(bed, seed)``, each estimator fitted on the training shots as it comes, so
    inside whatever context ``fits`` holds it in (e.g. a patch of the estimator's module).
    """
    for shots in shots_list:
        for seed in seeds:
            split = split_shots(bed.y, shots, seed)
            X, y = bed.X[split[0]], bed.y[split[0]]
            yield shots, seed, split, ((name, clf.fit(X, y)) for name, clf in fits(bed, seed))


def fitted_variants(bed, specs, names, shots_list, seeds):
    """Fit each named spec on the training shots of every shot count and seed.

    ``specs[name]`` is ``(estimator class, the test bed text it takes, its parameters)``;
    each is built with this test bed's text (:meth:`Testbed.text_kwargs`) and
    ``random_state=seed``. Yields ``shots, seed, name, (train, val, test), clf`` and the
    fit's CPU seconds.
    """
    import time

    for shots in shots_list:
        for seed in seeds:
            split = split_shots(bed.y, shots, seed)
            for name in names:
                estimator, text_of, params = specs[name]
                clf = estimator(**bed.text_kwargs(text_of), random_state=seed, **params)
                start = time.process_time()
                clf.fit(bed.X[split[0]], bed.y[split[0]])
                yield shots, seed, name, split, clf, time.process_time() - start


def run_study(args, names, run, table, load=load_testbed, **extra):
    """Run a study on one thread: ``run(load(testbed), names, shots, seeds)`` for every
    test bed of ``args``, then :func:`report_study` with ``table(rows, names, shots)``
    (with ``--update``, the rows replace theirs in the existing file instead)."""
    import torch

    torch.set_num_threads(1)
    shots_list, seeds = int_list(args.shots), int_list(args.seeds)
    rows = []
    for name in args.testbeds.split(","):
        rows += run(load(name), names, shots_list, seeds)
    if args.update and args.out.is_file():
        from sklearn_cmm.protocol.report import write_json

        record = _updated_study(args, rows, table)
        print(record["table"])
        write_json(args.out, record)
        return 0
    report_study(args, rows, table(rows, names, shots_list), **extra)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["train-b", "show"])
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    args = parser.parse_args(argv)
    if args.action == "train-b":
        train_fashion_tiny_b(args.cache_dir)
        return
    for name in TESTBEDS:
        try:
            bed = load_testbed(name, args.cache_dir)
        except FileNotFoundError as exc:
            print(f"{name}: {exc}")
            continue
        Xn = bed.X / np.linalg.norm(bed.X, axis=1, keepdims=True)
        zero_shot = np.mean((Xn @ bed.prototypes.T).argmax(1) == bed.y)
        print(f"{name}: X {bed.X.shape}, {bed.n_classes} classes, zero-shot top-1 "
              f"{zero_shot:.3f}, logit scale {bed.logit_scale}, projection "
              f"{None if bed.text_projection is None else bed.text_projection.shape}")


if __name__ == "__main__":
    main()
