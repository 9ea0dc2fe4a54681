"""Synthetic feature files with CLIP's modality gap, to run the protocol without images.

:func:`make_synthetic_features` writes files in the format of ``extract-features``
(:mod:`sklearn_cmm.protocol.features`) for any of the benchmark datasets, with their
class counts and (capped) split sizes. The embeddings imitate what matters to the methods:

* Classes: unit "concepts" ``mu_c`` grouped around ``n_classes / 10`` super-class centres
  (fine-grained neighbours are hard to tell apart).
* Images: ``scale * (0.45 mu_c + 0.8 g_img + sigma xi)``, ``xi`` isotropic noise of unit
  expected norm; texts: ``0.45 normalize(mu_c + tau eps_c) + 0.8 g_txt``, ``eps_c`` a fixed
  error of each class's prompts (so zero-shot is imperfect and shots help). ``g_img`` and
  ``g_txt`` are two different unit directions: images and texts lie in two narrow cones
  (cosine ~0.6 within a modality, ~0.3 across), CLIP's modality gap, ~0.8 apart.
* CLIP's text projection ``W`` (width x dim) has singular values spread over [0.4, 4];
  the pre-projection text features are the preimages ``t @ pinv(W)``.
* The ImageNet variants share ImageNet's concepts, with more noise and a domain shift.

Usage: ``python -m sklearn_cmm.protocol.synthetic OUT --datasets imagenet,caltech101,eurosat``.
"""

import argparse
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._math.basic import l2_normalize
from .datasets import DATASETS, SPLITS, get_spec
from .features import feature_file_name, save_features, text_arrays

#: (sigma, tau): image noise and text error per dataset; larger is harder.
DIFFICULTY = {
    "imagenet": (1.1, 0.9), "caltech101": (0.6, 0.5), "oxford_pets": (0.7, 0.5),
    "stanford_cars": (1.0, 0.8), "oxford_flowers": (0.8, 1.0), "food101": (0.8, 0.5),
    "fgvc_aircraft": (1.3, 1.6), "sun397": (1.0, 0.8), "dtd": (1.0, 1.3),
    "eurosat": (0.9, 1.6), "ucf101": (0.9, 0.9),
}
#: Spread of the classes around their super-class centre (smaller: finer-grained).
SPREAD = 0.6
#: Extra image noise and domain shift of the ImageNet variants.
SHIFT = {"imagenetv2": (1.15, 0.1), "imagenet_sketch": (1.5, 0.5),
         "imagenet_a": (1.9, 0.6), "imagenet_r": (1.4, 0.5)}

DEFAULT_CAPS = {"train": 32, "val": 16, "test": 50}


def _rng(*keys):
    return np.random.default_rng([zlib.crc32(str(k).encode()) for k in keys])


def _unit(rng, shape):
    return l2_normalize(rng.standard_normal(shape))


def _model_parts(dim, width, seed):
    """The gap directions and the text projection, shared by every dataset of a model."""
    rng = _rng("model", dim, width, seed)
    g_img, other = _unit(rng, (2, dim))
    # The two cones' centres are ~70 degrees apart (CLIP: image-text cosines ~0.3).
    g_txt = l2_normalize(0.35 * g_img + 0.94 * l2_normalize(other - (other @ g_img) * g_img))
    U = np.linalg.qr(rng.standard_normal((width, dim)))[0]
    V = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    singular = np.exp(rng.uniform(np.log(0.4), np.log(4.0), dim))
    return g_img, g_txt, (U * singular) @ V.T


def _concepts(family, n_classes, dim, seed):
    rng = _rng("concepts", family, n_classes, dim, seed)
    n_super = max(2, n_classes // 10)
    centres = _unit(rng, (n_super, dim))
    return l2_normalize(centres[rng.integers(n_super, size=n_classes)]
                        + SPREAD * _unit(rng, (n_classes, dim)))


def _images(rng, mu, labels, g_img, sigma, shift=None):
    dim = mu.shape[1]
    noise = rng.standard_normal((len(labels), dim)) / np.sqrt(dim)
    x = 0.45 * mu[labels] + 0.8 * g_img + sigma * noise
    if shift is not None:
        x = x + shift
    return (10.0 * x).astype(np.float32)  # raw CLIP image embeddings have norms ~10


def _text_entries(mu, tau, g_txt, projection, projection_pinv, rng):
    """The text arrays of a feature file: each concept with a fixed error, in the text cone."""
    base = l2_normalize(mu + 0.8 * tau * _unit(rng, mu.shape))
    projected, pre = {}, {}
    for name, n_prompts in (("clip", 7), ("coop", 1)):
        per_prompt = 8.0 * (0.45 * base[:, None, :] + 0.8 * g_txt
                            + 0.08 * _unit(rng, (len(mu), n_prompts, mu.shape[1])))
        projected[name] = list(per_prompt)
        # one flat product: numpy's batched matmul is a loop of small ones
        flat = per_prompt.reshape(-1, mu.shape[1]) @ projection_pinv
        pre[name] = list(flat.reshape(len(mu), n_prompts, -1))
    return text_arrays(projected, pre, projection)


def synthetic_problem(n_classes, n_train_per_class, n_test_per_class, dim=512, width=None,
                      *, sigma=1.1, tau=0.9, seed=0):
    """One in-memory few-shot problem (arrays of a feature file, train and test only).

    The same generator as :func:`make_synthetic_features` (ImageNet's difficulty by
    default), for benchmarks that need a given size rather than a dataset.
    """
    width = dim if width is None else width
    g_img, g_txt, projection = _model_parts(dim, width, seed)
    mu = _concepts("problem", n_classes, dim, seed)
    rng = _rng("problem-images", n_classes, dim, seed)
    out = {}
    for split, per_class in (("train", n_train_per_class), ("test", n_test_per_class)):
        labels = np.repeat(np.arange(n_classes), per_class)
        out[f"{split}_features"] = _images(rng, mu, labels, g_img, sigma)
        out[f"{split}_labels"] = labels
    out.update(_text_entries(mu, tau, g_txt, projection, np.linalg.pinv(projection), rng))
    return out


def _split_sizes(spec, caps):
    per_class = [s // spec.n_classes for s in spec.sizes]
    return {split: (min(n, caps[split]) if n else 0) for split, n in zip(SPLITS, per_class)}


def make_synthetic_features(
    out_dir,
    datasets=("imagenet", "caltech101", "eurosat"),
    *,
    dim=512,
    width=None,
    model="ViT-B-16",
    pretrained="synthetic",
    caps=None,
    n_classes=None,
    seed=0,
):
    """Write one synthetic feature file per dataset; returns their paths.

    Parameters
    ----------
    out_dir : str or Path
    datasets : sequence of str
        Dataset keys (:data:`~sklearn_cmm.protocol.datasets.DATASETS`), the ImageNet
        variants included.
    dim, width : int
        Embedding dimension and text width (``width=None``: ``dim``).
    model, pretrained : str
        Written into the file names and metadata; ``model`` decides which published
        numbers the runner shows (``"ViT-B-16"``, ``"RN50"``).
    caps : dict or None
        Images a class per split at most (default ``DEFAULT_CAPS``); the dataset's real
        count (CoOp's split sizes) when smaller.
    n_classes : int or None
        Override every dataset's class count (tests).
    seed : int
    """
    width = dim if width is None else width
    caps = {**DEFAULT_CAPS, **(caps or {})}
    g_img, g_txt, projection = _model_parts(dim, width, seed)
    projection_pinv = np.linalg.pinv(projection)
    paths = []
    for key in datasets:
        spec = get_spec(key)
        family = "imagenet" if spec.test_only else spec.key
        source = DATASETS[family]
        classes = n_classes or source.n_classes
        mu = _concepts(family, classes, dim, seed)
        sigma, tau = DIFFICULTY.get(family, (1.0, 1.0))
        rng = _rng("images", spec.key, classes, dim, seed)
        shift = None
        if spec.test_only:
            factor, amount = SHIFT[spec.key]
            sigma, shift = sigma * factor, amount * _unit(rng, dim)
        labels_of = {}
        sizes = _split_sizes(spec, caps)
        subset = np.arange(classes)
        if spec.n_classes < source.n_classes:  # ImageNet-A and -R: 200 of the 1000 classes
            k = max(2, round(classes * spec.n_classes / source.n_classes))
            subset = np.sort(rng.choice(classes, k, replace=False))
        arrays = {}
        for split in SPLITS:
            labels = np.repeat(subset, sizes[split])
            labels = labels[rng.permutation(len(labels))]  # split files are not class-sorted
            arrays[f"{split}_features"] = _images(rng, mu, labels, g_img, sigma, shift)
            arrays[f"{split}_labels"] = labels.astype(np.int64)
            labels_of[split] = len(labels)
        arrays.update(_text_entries(mu, tau, g_txt, projection, projection_pinv,
                                    _rng("text", family, classes, dim, seed)))
        arrays["class_names"] = np.asarray([f"{source.key} class {i}" for i in range(classes)])
        metadata = {
            "dataset": spec.key, "dataset_name": spec.name, "model": model,
            "pretrained": pretrained, "embed_dim": dim, "text_width": width,
            "n_classes": classes, "n_images": labels_of, "test_only": spec.test_only,
            "prompt_sets": ["clip", "coop"], "synthetic": True,
            "synthetic_params": {"sigma": sigma, "tau": tau, "seed": seed},
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        path = Path(out_dir) / feature_file_name(spec.key, model, pretrained)
        save_features(path, arrays, metadata)
        paths.append(path)
    return paths


def main(argv=None):
    """``python -m sklearn_cmm.protocol.synthetic OUT [--datasets ...] [--dim 512]``."""
    parser = argparse.ArgumentParser(
        prog="python -m sklearn_cmm.protocol.synthetic",
        description=__doc__.splitlines()[0] + " Then run: sklearn-cmm benchmark --features OUT",
    )
    parser.add_argument("out", type=Path,
                        help="folder for the feature files (<dataset>__<model>__synthetic.npz)")
    parser.add_argument("--datasets", default="imagenet,caltech101,eurosat",
                        help="comma-separated dataset keys (imagenet, caltech101, ..., the "
                        "ImageNet variants imagenetv2, imagenet_sketch, imagenet_a, "
                        "imagenet_r); 'all' for the 11 few-shot datasets (default "
                        "imagenet,caltech101,eurosat)")
    parser.add_argument("--dim", type=int, default=512,
                        help="embedding dimension (default 512, ViT-B/16's)")
    parser.add_argument("--width", type=int, default=None,
                        help="text width before CLIP's text projection (default: --dim)")
    parser.add_argument("--model", default="ViT-B-16",
                        help="model name written into the files; it decides which published "
                        "numbers the benchmark shows beside them (ViT-B-16 or RN50; "
                        "default ViT-B-16)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the generator (default 0)")
    parser.add_argument("--train-cap", type=int, default=DEFAULT_CAPS["train"],
                        help="training images a class at most (default "
                        f"{DEFAULT_CAPS['train']}; fewer where the dataset has fewer)")
    parser.add_argument("--test-cap", type=int, default=DEFAULT_CAPS["test"],
                        help="test images a class at most (default "
                        f"{DEFAULT_CAPS['test']})")
    args = parser.parse_args(argv)
    from .datasets import FEW_SHOT_DATASETS

    keys = FEW_SHOT_DATASETS if args.datasets == "all" else args.datasets.split(",")
    for path in make_synthetic_features(
        args.out, keys, dim=args.dim, width=args.width, model=args.model, seed=args.seed,
        caps={"train": args.train_cap, "test": args.test_cap},
    ):
        print(path)


if __name__ == "__main__":
    main()
