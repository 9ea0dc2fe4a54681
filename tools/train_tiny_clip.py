"""Train the tiny CLIP model that sklearn-cmm ships, on Fashion-MNIST, on the CPU.

Pretrained CLIP weights cannot be bundled or downloaded, so the package ships a small
open_clip model trained here. It is meant as a *test bed* for few-shot methods that close
CLIP's modality gap, which shapes two choices (see ``docs/bundled_model.md``):

* plain contrastive training (open_clip's ``ClipLoss``) with a learned temperature and
  nothing that pulls the two modalities together, so the modality gap is there;
* for 3 of the 10 classes (``--synonym-only-classes``, by default pullover, sneaker and
  shirt) the captions never use the class name that zero-shot
  classification prompts with: pullovers are captioned "sweater", "jumper" or "top",
  sneakers "trainer", "running shoe" or "shoe", shirts "blouse", "button-down" or "top"
  (the word "shirt" only occurs inside "t-shirt"). The image tower still learns these
  classes, but the zero-shot prompts name them with words the text tower never learnt
  for them, and each has look-alike siblings whose names it did learn (t-shirt, coat;
  sandal, ankle boot), so zero-shot puts them with their siblings, while a few labelled
  images per class (few-shot methods) recover them. This mimics a downstream label
  vocabulary that the pre-training captions do not use for fine-grained classes.

Usage (the shipped files were written by the default run)::

    apt-get install dataset-fashion-mnist   # IDX files in /usr/share/datasets/fashion-mnist
    python tools/train_tiny_clip.py

A second test bed (another seed, another caption regime, the same held-out images as the
shipped ones; the benchmarks' ``fashion-tiny-b``)::

    python tools/train_tiny_clip.py --seed 1 --synonym-only-classes t-shirt coat dress \
        --test-indices-from sklearn_cmm/_bundled/fashion_mnist_test.npz --out-dir DIR

Outputs in ``--out-dir`` (default ``sklearn_cmm/_bundled``): the fp16 safetensors weights,
the model config (copied there if ``--config`` lives elsewhere), the held-out test images
``fashion_mnist_test.npz`` and the training record ``<model>.train.json``.

This script is not imported by the package.
"""

import argparse
import gzip
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import safetensors.torch
import sklearn
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from sklearn.linear_model import LogisticRegression

MODEL_NAME = "sklearn-cmm-fashion-tiny"
REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_DIR = REPO_ROOT / "sklearn_cmm" / "_bundled"
DATA_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Fashion-MNIST's label names, in label order.
FASHION_MNIST_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
#: The names zero-shot classification prompts with (and the package's demo uses).
CLASS_NAMES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
#: Templates for both the training captions and the zero-shot prompt ensemble.
TEMPLATES = (
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a product photo of a {}.",
    "a picture of a {}.",
    "a {} on a black background.",
    "a small photo of the {}.",
    "a {}.",
)
#: Besides its zero-shot name, the words training captions name each class with. Synonyms
#: give the text tower some variety; "top" and "shoe" are shared between visually
#: confusable classes.
SYNONYMS = (
    ("tee", "top"),
    ("trousers", "pants", "jeans"),
    ("sweater", "jumper", "top"),
    ("gown", "frock"),
    ("jacket", "outerwear"),
    ("sandals", "shoe"),
    ("blouse", "button-down", "top"),
    ("trainer", "running shoe", "shoe"),
    ("handbag", "purse"),
    ("boot", "shoe"),
)
#: The classes whose captions use only their synonyms, never their zero-shot name (see the
#: module docstring); the shipped model's. Bag, which has no look-alike class, keeps its
#: name: held out, its zero-shot accuracy was a lottery over seeds (0-93%), decided by
#: where the never-trained token's random embedding happens to land rather than by a
#: sibling's prompt.
SYNONYM_ONLY_CLASSES = ("pullover", "sneaker", "shirt")


def caption_names(synonym_only_classes):
    """Per class, the words its training captions use: its name first unless synonym-only."""
    return tuple(
        synonyms if name in synonym_only_classes else (name, *synonyms)
        for name, synonyms in zip(CLASS_NAMES, SYNONYMS)
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=BUNDLED_DIR)
    parser.add_argument(
        "--config", type=Path, default=BUNDLED_DIR / f"{MODEL_NAME}.json",
        help="open_clip model config plus its preprocess_cfg",
    )
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument(
        "--synonym-only-classes", nargs="*", choices=CLASS_NAMES,
        default=list(SYNONYM_ONLY_CLASSES), metavar="CLASS",
        help="zero-shot class names whose captions use only synonyms, never the name "
        f"(default: {' '.join(SYNONYM_ONLY_CLASSES)})",
    )
    parser.add_argument(
        "--test-indices-from", type=Path, default=None, metavar="NPZ",
        help="take the held-out test images (their indices in the official test split) from "
        "this npz written by an earlier run, e.g. the shipped one, so that two models are "
        "evaluated on the same images; by default a seeded class-balanced draw of --n-test",
    )
    parser.add_argument(
        "--n-train", type=int, default=20000,
        help="training images, a seeded subset of the 60,000 of the training split; the "
        "rest supplies the linear probe's shots, images the model never saw",
    )
    parser.add_argument(
        "--n-test", type=int, default=5000,
        help="class-balanced seeded subset of the official test split, shipped as npz",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    parser.add_argument("--shots", type=int, default=16, help="linear probe shots per class")
    parser.add_argument("--probe-draws", type=int, default=5)
    parser.add_argument("--probe-c", type=float, default=10.0)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads; the weights are bit-identical across reruns only with the same "
        "value (and CPU). One thread is the fastest on a busy shared machine, where "
        "OpenMP threads contending for cores spin",
    )
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- data


def read_idx(path):
    """An IDX file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(data_dir, prefix):
    """Images ``(n, 28, 28)`` uint8 and labels ``(n,)`` int64 of ``"train"`` or ``"t10k"``."""
    arrays = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        stem = data_dir / f"{prefix}-{kind}"
        found = [p for p in (stem, stem.with_name(stem.name + ".gz")) if p.is_file()]
        if not found:
            sys.exit(
                f"Fashion-MNIST file {stem}[.gz] not found. Install the data with\n"
                "    sudo apt-get install dataset-fashion-mnist\n"
                f"(Debian/Ubuntu; it puts the IDX files in {DATA_DIR}) or pass --data-dir."
            )
        arrays.append(read_idx(found[0]))
    images, labels = arrays
    return images, labels.astype(np.int64)


def balanced_subset(labels, n, rng):
    """Sorted indices of ``n`` items, ``n / n_classes`` drawn at random from each class."""
    classes = np.unique(labels)
    per_class = n // len(classes)
    picked = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in classes]
    return np.sort(np.concatenate(picked))


def preprocess_images(images, transform):
    """uint8 grayscale images through the model's own inference transform, as RGB PIL."""
    return torch.stack([transform(Image.fromarray(img).convert("RGB")) for img in images])


# ----------------------------------------------------------------------------- model


def load_config(path):
    """The open_clip model config and the preprocess config stored beside it.

    open_clip 3.3 only reads ``preprocess_cfg`` from ``open_clip_config.json`` files (the
    ``hf-hub:`` and ``local-dir:`` schemas); in a config registered with
    ``add_model_config`` the extra key reaches ``CLIP.__init__`` and fails. So it is split
    off here and the model is built from the rest.
    """
    model_cfg = json.loads(Path(path).read_text())
    preprocess_cfg = model_cfg.pop("preprocess_cfg")
    return model_cfg, preprocess_cfg


def build_model(model_cfg, preprocess_cfg):
    model = open_clip.CLIP(**model_cfg)
    # What create_model does, so open_clip.get_model_preprocess_cfg(model) is right.
    open_clip.set_model_preprocess_cfg(model, preprocess_cfg)
    return model


def caption_table(tokenizer, names_per_class):
    """Every training caption (template x caption name), tokenised, and its class."""
    texts, classes = [], []
    for label, names in enumerate(names_per_class):
        for name in names:
            for template in TEMPLATES:
                texts.append(template.format(name))
                classes.append(label)
    check_fits(texts, tokenizer)
    return texts, tokenizer(texts), torch.tensor(classes)


def check_fits(texts, tokenizer):
    """Fail rather than let the tokenizer silently truncate a text to the context length."""
    longest = max(len(tokenizer.encode(t)) + 2 for t in texts)  # + start and end tokens
    if longest > tokenizer.context_length:
        raise ValueError(
            f"A text needs {longest} tokens but the context length is "
            f"{tokenizer.context_length}."
        )


def unseen_name_tokens(tokenizer, names_per_class):
    """Per zero-shot class name, its BPE tokens that no training caption contains."""
    seen = {tok for names in names_per_class for n in names for tok in tokenizer.encode(n)}
    return {
        name: [tokenizer.decoder[t] for t in tokenizer.encode(name) if t not in seen]
        for name in CLASS_NAMES
    }


# ----------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def encode_images(model, images, batch_size=500):
    model.eval()
    starts = range(0, len(images), batch_size)
    feats = [model.encode_image(images[i : i + batch_size]) for i in starts]
    return torch.nn.functional.normalize(torch.cat(feats), dim=-1)


@torch.inference_mode()
def prompt_features(model, tokenizer):
    """Normalised embeddings of every zero-shot prompt, ``(n_classes, n_templates, dim)``."""
    model.eval()
    prompts = [t.format(name) for name in CLASS_NAMES for t in TEMPLATES]
    check_fits(prompts, tokenizer)
    feats = torch.nn.functional.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
    return feats.reshape(len(CLASS_NAMES), len(TEMPLATES), -1)


def zero_shot(model, tokenizer, test_feats, test_labels):
    """Top-1 with CLIP's prompt ensemble, per class too, and the modality gap.

    Class prototype: the normalised mean of the normalised prompt embeddings. Modality gap:
    the distance between the centroid of the normalised test-image embeddings and that of
    the normalised prompt embeddings (Liang et al. 2022).
    """
    prompts = prompt_features(model, tokenizer)
    prototypes = torch.nn.functional.normalize(prompts.mean(dim=1), dim=-1)
    pred = (test_feats @ prototypes.T).argmax(dim=1).numpy()
    correct = pred == test_labels
    gap = test_feats.mean(dim=0) - prompts.reshape(-1, prompts.shape[-1]).mean(dim=0)
    return {
        "top1": float(correct.mean()),
        "top1_per_class": {
            name: float(correct[test_labels == c].mean()) for c, name in enumerate(CLASS_NAMES)
        },
        "modality_gap": float(gap.norm()),
    }


def linear_probe(model, pool_images, pool_labels, transform, test_feats, test_labels, args):
    """Top-1 of a logistic regression on ``args.shots`` labelled images per class.

    Averaged over ``args.probe_draws`` seeded draws of the shots from the uint8
    ``pool_images``; only the drawn shots go through ``transform``.
    """
    rng = np.random.default_rng(args.seed + 1)
    scores = []
    for _ in range(args.probe_draws):
        idx = np.concatenate([
            rng.choice(np.flatnonzero(pool_labels == c), args.shots, replace=False)
            for c in range(len(CLASS_NAMES))
        ])
        clf = LogisticRegression(C=args.probe_c, max_iter=5000)
        shots = preprocess_images(pool_images[idx], transform)
        clf.fit(encode_images(model, shots).numpy(), pool_labels[idx])
        scores.append(clf.score(test_feats.numpy(), test_labels))
    return {"top1_mean": float(np.mean(scores)), "top1_std": float(np.std(scores)),
            "top1_per_draw": [float(s) for s in scores]}


# ----------------------------------------------------------------------------- training


def lr_at(step, total, args):
    """Linear warm-up then cosine decay to zero (open_clip's training schedule)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, total - args.warmup)
    return 0.5 * args.lr * (1 + math.cos(math.pi * progress))


def make_optimizer(model, args):
    # open_clip's training excludes gains, biases and the temperature from weight decay.
    def no_decay(name, param):
        return param.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name

    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)


def train(model, images, labels, caption_tokens, caption_classes, eval_fn, args):
    """Contrastive training; each epoch draws a fresh caption of its class for every image."""
    generator = torch.Generator().manual_seed(args.seed)
    labels = torch.as_tensor(labels)
    # Captions are grouped by class: class c owns rows offsets[c] : offsets[c] + counts[c].
    counts = torch.bincount(caption_classes, minlength=len(CLASS_NAMES))
    offsets = torch.cumsum(counts, 0) - counts
    loss_fn = open_clip.ClipLoss()
    optimizer = make_optimizer(model, args)
    steps_per_epoch = len(images) // args.batch_size  # drop the last partial batch
    total = steps_per_epoch * args.epochs
    curve, step = [], 0
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        pick = (torch.rand(len(images), generator=generator) * counts[labels]).long()
        captions = offsets[labels] + pick
        losses = []
        start = time.perf_counter()
        for b in range(steps_per_epoch):
            batch = order[b * args.batch_size : (b + 1) * args.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, args)
            image_feats, text_feats, logit_scale = model(
                images[batch], caption_tokens[captions[batch]]
            )
            loss = loss_fn(image_feats, text_feats, logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # CLIP caps the temperature's inverse at 100
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            step += 1
        record = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "loss_last_batch": losses[-1],
            "logit_scale": model.logit_scale.exp().item(),
            "seconds": round(time.perf_counter() - start, 1),
            **eval_fn(model),
        }
        curve.append(record)
        print(
            f"epoch {record['epoch']}/{args.epochs}: loss {record['loss']:.4f}, "
            f"zero-shot {record['zero_shot_top1']:.3f}, gap {record['modality_gap']:.3f}, "
            f"logit scale {record['logit_scale']:.1f}, {record['seconds']} s",
            flush=True,
        )
    return curve


# ----------------------------------------------------------------------------- main


def shown_path(path):
    """``path`` relative to the repository when inside it, so the record is portable."""
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    load_at_start = round(os.getloadavg()[0], 2)  # wall-clock depends on what else runs
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)

    model_cfg, preprocess_cfg = load_config(args.config)
    tokenizer = open_clip.SimpleTokenizer(context_length=model_cfg["text_cfg"]["context_length"])
    transform = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)

    train_images, train_labels = load_split(args.data_dir, "train")
    test_images, test_labels = load_split(args.data_dir, "t10k")
    if args.test_indices_from is None:
        test_idx = balanced_subset(test_labels, args.n_test, rng)
    else:
        with np.load(args.test_indices_from) as npz:
            test_idx = npz["test_split_indices"]
    test_images, test_labels = test_images[test_idx], test_labels[test_idx]
    order = rng.permutation(len(train_images))
    fit_idx, pool_idx = np.sort(order[: args.n_train]), np.sort(order[args.n_train :])
    if len(pool_idx) == 0:  # every training image is used: shots come from them
        pool_idx = fit_idx
    x_fit = preprocess_images(train_images[fit_idx], transform)
    x_test = preprocess_images(test_images, transform)

    names_per_class = caption_names(args.synonym_only_classes)
    texts, caption_tokens, caption_classes = caption_table(tokenizer, names_per_class)
    model = build_model(model_cfg, preprocess_cfg)

    def eval_fn(m):
        result = zero_shot(m, tokenizer, encode_images(m, x_test), test_labels)
        return {"zero_shot_top1": result["top1"], "modality_gap": result["modality_gap"]}

    at_init = eval_fn(model)
    t_train = time.perf_counter()
    curve = train(
        model, x_fit, train_labels[fit_idx], caption_tokens, caption_classes, eval_fn, args
    )
    train_seconds = time.perf_counter() - t_train
    before_export = eval_fn(model)

    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / f"{MODEL_NAME}.safetensors"
    config_path = out_dir / f"{MODEL_NAME}.json"
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, weights_path, metadata={"model": MODEL_NAME})
    weights_path.chmod(0o644)  # save_file creates it owner-only; package data must be readable
    if config_path.resolve() != args.config.resolve():
        shutil.copyfile(args.config, config_path)
    npz_path = out_dir / "fashion_mnist_test.npz"
    np.savez_compressed(
        npz_path,
        images=test_images,
        labels=test_labels,
        class_names=np.array(CLASS_NAMES),
        templates=np.array(TEMPLATES),
        test_split_indices=test_idx,
    )

    # Every reported number comes from the shipped fp16 file, reloaded into fp32.
    shipped = build_model(model_cfg, preprocess_cfg)
    open_clip.load_checkpoint(shipped, str(weights_path))
    test_feats = encode_images(shipped, x_test)
    final = zero_shot(shipped, tokenizer, test_feats, test_labels)
    probe = linear_probe(
        shipped, train_images[pool_idx], train_labels[pool_idx], transform, test_feats,
        test_labels, args,
    )
    logit_scale = shipped.logit_scale.exp().item()

    record = {
        "model": MODEL_NAME,
        "command": shlex.join(["python", "tools/train_tiny_clip.py", *sys.argv[1:]]),
        "args": {k: shown_path(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model_config": json.loads(args.config.read_text()),
        "data": {
            "source": "Fashion-MNIST (Xiao, Rasul, Vollgraf 2017), Debian dataset-fashion-mnist",
            "n_train_images": len(fit_idx),
            "n_test_images": len(test_idx),
            "linear_probe_shots_from": (
                "training-split images not used for training" if len(pool_idx) != len(fit_idx)
                else "training images"
            ),
        },
        "captions": {
            "templates": list(TEMPLATES),
            "caption_names": {
                FASHION_MNIST_LABELS[c]: list(names) for c, names in enumerate(names_per_class)
            },
            "synonym_only_classes": list(args.synonym_only_classes),
            "n_distinct_captions": len(texts),
            "zero_shot_name_tokens_unseen_in_training": unseen_name_tokens(
                tokenizer, names_per_class
            ),
        },
        "zero_shot": {
            "class_names": list(CLASS_NAMES),
            "templates": list(TEMPLATES),
            "top1": final["top1"],
            "top1_per_class": final["top1_per_class"],
            "top1_before_fp16_export": before_export["zero_shot_top1"],
        },
        "linear_probe": {"shots_per_class": args.shots, "C": args.probe_c, **probe},
        "modality_gap": final["modality_gap"],
        "modality_gap_at_init": at_init["modality_gap"],
        "logit_scale": logit_scale,
        "training_curve": curve,
        "wall_clock_seconds": {
            "training": round(train_seconds, 1),
            "total": round(time.perf_counter() - t_start, 1),
        },
        "files": {
            p.name: p.stat().st_size for p in (weights_path, config_path, npz_path)
        },
        "n_parameters": sum(p.numel() for p in shipped.parameters()),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "threads": args.threads,
        "load_average_at_start": load_at_start,
        "platform": platform.platform(),
    }
    record_path = out_dir / f"{MODEL_NAME}.train.json"
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"zero-shot top-1 {final['top1']:.4f}; {args.shots}-shot linear probe "
        f"{probe['top1_mean']:.4f} ± {probe['top1_std']:.4f}; modality gap "
        f"{final['modality_gap']:.3f}; logit scale {logit_scale:.1f}; "
        f"weights {weights_path.stat().st_size / 1e6:.2f} MB; "
        f"total {record['wall_clock_seconds']['total']:.0f} s. Record: {record_path}"
    )


if __name__ == "__main__":
    main()
