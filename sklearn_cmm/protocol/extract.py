"""Cache the CLIP features of a few-shot benchmark dataset in CoOp's layout.

Reads a dataset of the few-shot benchmark (CoOp / Tip-Adapter / SeMoBridge layout: the
image folder and its ``split_zhou_*.json``, or FGVC-Aircraft's and ImageNet's own files)
and writes one compressed file per dataset and model, ``OUT/<dataset>__<model>__<weights>.npz``,
with the raw image features of train / val / test, labels, class names, per-class text
features of each prompt set (CLIP's 7 ImageNet templates, the dataset's CoOp template,
optional CuPL-style descriptions), their pre-projection features and the text projection.

Resumable: image features are written in chunks under ``OUT/.cache/`` as they are computed
and a new run skips the chunks (and the finished files) that exist; chunks and text of
other inputs (another image list, chunk size or prompt set) are recomputed, and
``--force`` recomputes everything.
Runs on the GPU when there is one (``--device auto``).

Example: ``sklearn-cmm extract-features --dataset-root ~/data --dataset all --out features/``
"""

import argparse
import hashlib
import json
import random
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .datasets import (
    DATASETS,
    FEW_SHOT_DATASETS,
    SHIFT_DATASETS,
    SPLITS,
    get_spec,
    prompt_name,
    read_split,
)
from .features import feature_file_name, save_features, text_arrays
from .report import UsageError, available_device, existing_dir, positive_int, writable_dir

_DEFAULT_CHUNK = 4096


def add_arguments(parser):
    """Options of ``sklearn-cmm extract-features``."""
    parser.add_argument("--dataset-root", type=existing_dir, required=True,
                        help="folder holding the datasets in CoOp's layout (oxford_pets/, ...)")
    parser.add_argument("--dataset", type=_dataset_list, required=True,
                        help="dataset(s), comma-separated: " + ", ".join(DATASETS)
                        + "; 'all' for the 11 few-shot datasets, 'shift' for the 4 ImageNet "
                        "variants")
    parser.add_argument("--model", default="ViT-B-16",
                        help="open_clip model name or path of a .json model config "
                        "(default ViT-B-16)")
    parser.add_argument("--pretrained", default="openai",
                        help="open_clip pretrained tag or checkpoint file (default openai)")
    parser.add_argument("--out", type=writable_dir, required=True,
                        help="folder for the feature files")
    parser.add_argument("--cupl", type=_existing_path, default=None,
                        help="CuPL-style descriptions: a JSON file {classname: [sentences]} "
                        "(one dataset), or a folder with <dataset>.json files")
    parser.add_argument("--device", type=available_device, default="auto",
                        help="'auto' (GPU if any), 'cpu', 'cuda'")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="'auto': fp32 on CPU, mixed precision on GPU")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per forward pass")
    parser.add_argument("--num-workers", type=_count, default=None,
                        help="image decoding threads (default: on the CPU the cores the "
                        "model's threads leave, at most 8; with a GPU min(8, CPUs))")
    parser.add_argument("--chunk-size", type=positive_int, default=_DEFAULT_CHUNK,
                        help="images per resumable cache chunk")
    parser.add_argument("--max-train-per-class", type=positive_int, default=None,
                        help="keep at most this many training images a class (e.g. 100 for "
                        "ImageNet's 1.28M); the shot draw then differs from CoOp's")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where pretrained weights are looked up")
    parser.add_argument("--force", action="store_true", help="recompute everything")
    parser.add_argument("--keep-cache", action="store_true",
                        help="keep the per-chunk cache after writing the file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _dataset_list(text):
    """``--dataset``: ``all``, ``shift`` or comma-separated names, as dataset keys."""
    if text == "all":
        return list(FEW_SHOT_DATASETS)
    if text == "shift":
        return list(SHIFT_DATASETS)
    try:
        keys = [get_spec(part.strip()).key for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).rstrip(".")) from None
    if not keys:
        raise argparse.ArgumentTypeError(f"expected dataset names; got {text!r}")
    return keys


def _existing_path(text):
    """A file or folder that exists, as a :class:`~pathlib.Path`."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text!r} does not exist")
    return path


def _count(text):
    """A whole number >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0; got {text!r}")
    return int(text)


def _check_weights(model, pretrained):
    """``--model`` and ``--pretrained`` as the loader reads them, without loading weights.

    The config must be known (or a readable ``.json``) and ``--pretrained`` one of its
    tags or an existing file, so that a typo fails at once, not when the first image
    chunk loads the model. Whether a tag's weights can be downloaded is found out then.
    """
    from .._clip.config import model_name
    from .._clip.weights import weights_source

    try:
        name = model_name(model)
    except ValueError as error:
        raise UsageError(f"--model: {error}") from None
    try:
        weights_source(name, pretrained)
    except ValueError as error:
        raise UsageError(f"--pretrained: {error}") from None


def _subsample_train(splits, max_per_class):
    """At most ``max_per_class`` training images a class (fixed seed 0, order kept)."""
    paths, labels = splits["train"]
    by_label = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    rng = random.Random(0)
    keep = sorted(i for items in by_label.values()
                  for i in (items if len(items) <= max_per_class
                            else rng.sample(items, max_per_class)))
    splits["train"] = ([paths[i] for i in keep], [labels[i] for i in keep])


def load_descriptions(cupl, spec, class_names):
    """CuPL-style sentences per class from ``cupl`` (a JSON file or a folder), or None.

    The JSON maps class names to lists of sentences; keys are matched to the dataset's
    class names ignoring case, underscores and spaces. Every class must have sentences.
    In a folder, the dataset's file is named by any of its names (key, table name, CoOp's
    name, folder: ``oxford_flowers.json``, ``flowers102.json``), ignoring case,
    underscores and hyphens, with or without CuPL's ``CuPL_prompts_`` prefix.
    """
    if cupl is None:
        return None
    path = Path(cupl)
    if path.is_dir():
        found = [p for p in sorted(path.glob("*.json")) if _squash(p.stem).removeprefix(
            "cuplprompts") in {_squash(n) for n in (spec.key, spec.name, spec.coop_name,
                                                    spec.folder)}]
        if not found:
            return None
        path = found[0]
    table = json.loads(path.read_text())

    def norm(name):
        return name.lower().replace("_", " ").replace("  ", " ").strip()

    table = {norm(k): v for k, v in table.items()}
    missing = [name for name in class_names if norm(name) not in table]
    if missing:
        raise ValueError(f"{path}: no descriptions for {len(missing)} classes, e.g. "
                         f"{missing[:3]!r}.")
    return [[str(s) for s in table[norm(name)]] for name in class_names]


def _squash(name):
    return name.lower().replace("_", "").replace("-", "")


def prompt_sets(spec, class_names, descriptions=None):
    """Prompts per set and class: ``{"clip": [[...] per class], "coop": ..., "cupl": ...}``."""
    from ..text import CLIP_IMAGENET_TEMPLATES

    names = [prompt_name(c) for c in class_names]
    sets = {
        "clip": [[t.format(n) for t in CLIP_IMAGENET_TEMPLATES] for n in names],
        "coop": [[spec.template.format(n)] for n in names],
    }
    if descriptions is not None:
        sets["cupl"] = descriptions
    return sets


def _encode_text(encoder, sets):
    """Per-prompt projected and pre-projection features of every set, and the projection."""
    projection = np.asarray(encoder.text_projection, dtype=np.float64)
    prompts = [p for per_class in sets.values() for prompts in per_class for p in prompts]
    pre_all = np.asarray(encoder.encode_text_pre_projection(prompts), dtype=np.float64)
    projected, pre, start = {}, {}, 0
    for name, per_class in sets.items():
        projected[name], pre[name] = [], []
        for prompts_c in per_class:
            rows = pre_all[start : start + len(prompts_c)]
            start += len(prompts_c)
            pre[name].append(rows)
            projected[name].append(rows @ projection)
    return projected, pre, projection


def _split_chunks(cache, split, n, chunk):
    return [(cache / f"{split}_{k:06d}.npy", k * chunk, min(n, (k + 1) * chunk))
            for k in range((n + chunk - 1) // chunk)]


def _weights_identity(args):
    """What decides the features besides the inputs: the model (a config file by its
    version), its weights (a checkpoint file by its resolved path and version) and the
    precision."""
    from .._clip.model import model_key

    key = model_key(args.model, args.pretrained)
    return {"model": key.name, "source": key.source, "weights": key.weights,
            "versions": key.versions, "precision": args.precision}


def _drop_stale_cache(cache, image_inputs, text_inputs, log):
    """Remove what the cache holds from other inputs, so that a resumed run cannot mix it
    in: image chunks of another image list, chunk size or model, text of other prompts or
    model. What the cache holds is recorded in ``inputs.json``, as digests."""

    def digest(value):
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()

    record = cache / "inputs.json"
    held = json.loads(record.read_text()) if record.exists() else {}
    current = {"images": digest(image_inputs), "text": digest(text_inputs)}
    if held.get("images") != current["images"] and any(cache.glob("*.npy")):
        log(f"{cache.name}: cached image chunks are of other images, chunk size or model, "
            "recomputed")
        for chunk in cache.glob("*.npy"):
            chunk.unlink()
    if held.get("text") != current["text"] and (cache / "text.npz").exists():
        log(f"{cache.name}: cached text features are of other prompts or model, recomputed")
        (cache / "text.npz").unlink()
    record.write_text(json.dumps(current))


def extract_dataset(spec, args, featurizer_factory, text_encoder, log=print):
    """Extract one dataset (resumably); returns the written path."""
    from tqdm.auto import tqdm

    from .. import __version__
    from ..text import CLIP_IMAGENET_TEMPLATES

    out = args.out / feature_file_name(spec.key, args.model, args.pretrained)
    if out.exists() and not args.force:
        log(f"{spec.key}: {out} exists, skipped (--force to redo)")
        return out
    splits, class_names = read_split(args.dataset_root, spec)
    if args.max_train_per_class:
        _subsample_train(splits, args.max_train_per_class)
    cache = args.out / ".cache" / out.stem
    if args.force and cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    descriptions = load_descriptions(args.cupl, spec, class_names)
    if args.cupl is not None and descriptions is None:
        log(f"{spec.key}: no descriptions for it in {args.cupl}, no cupl prompt set")
    sets = prompt_sets(spec, class_names, descriptions)
    weights = _weights_identity(args)
    _drop_stale_cache(
        cache,
        {"weights": weights, "chunk_size": args.chunk_size,
         **{s: [str(p) for p in splits[s][0]] for s in SPLITS}},
        {"weights": weights, "prompts": sets}, log)

    start = time.perf_counter()
    chunks = {s: _split_chunks(cache, s, len(splits[s][0]), args.chunk_size) for s in SPLITS}
    total = sum(len(splits[s][0]) for s in SPLITS)
    done = sum(stop - lo for s in SPLITS for path, lo, stop in chunks[s] if path.exists())
    featurizer = None
    with tqdm(total=total, initial=done, desc=f"{spec.key} images", unit="img",
              disable=args.quiet) as bar:
        for split in SPLITS:
            paths = splits[split][0]
            for path, lo, hi in chunks[split]:
                if path.exists():
                    continue
                featurizer = featurizer or featurizer_factory()
                features = featurizer.transform([str(p) for p in paths[lo:hi]])
                tmp = path.with_name(path.stem + ".tmp.npy")
                np.save(tmp, features.astype(np.float32))
                tmp.replace(path)
                bar.update(hi - lo)

    text_cache = cache / "text.npz"
    if text_cache.exists():
        with np.load(text_cache) as npz:
            text = {k: npz[k] for k in npz.files}
    else:
        projected, pre, projection = _encode_text(text_encoder, sets)
        text = text_arrays(projected, pre, projection)
        np.savez(text_cache, **text)

    dim = text["text_projection"].shape[1]
    arrays = {}
    for split in SPLITS:
        parts = [np.load(path) for path, _, _ in chunks[split]]
        arrays[f"{split}_features"] = (np.concatenate(parts) if parts
                                       else np.zeros((0, dim), np.float32))
        arrays[f"{split}_labels"] = np.asarray(splits[split][1], dtype=np.int64)
    arrays["class_names"] = np.asarray(class_names)
    arrays.update(text)
    metadata = {
        "dataset": spec.key,
        "dataset_name": spec.name,
        "model": str(args.model),
        "pretrained": str(args.pretrained),
        "embed_dim": int(dim),
        "text_width": int(text["text_projection"].shape[0]),
        "n_classes": len(class_names),
        "n_images": {s: len(splits[s][0]) for s in SPLITS},
        "test_only": spec.test_only,
        "prompt_sets": list(sets),
        "templates": {"clip": list(CLIP_IMAGENET_TEMPLATES), "coop": [spec.template]},
        "cupl_file": None if descriptions is None else str(args.cupl),
        "max_train_per_class": args.max_train_per_class,
        "features": "raw CLIP image embeddings (encode_image output, not normalised)",
        "preprocess": getattr(featurizer, "preprocess_cfg_", None),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sklearn_cmm_version": __version__,
        "extraction_seconds": round(time.perf_counter() - start, 2),
        "synthetic": False,
    }
    save_features(out, arrays, metadata)
    if not args.keep_cache:
        shutil.rmtree(cache)
    log(f"{spec.key}: wrote {out} ({', '.join(f'{s} {len(splits[s][0])}' for s in SPLITS)}; "
        f"{len(class_names)} classes; {time.perf_counter() - start:.1f} s)")
    return out


def run(args):
    """Extract the features of every requested dataset; returns 0 on success."""
    from .._clip.text_encoder import CLIPTextEncoder
    from ..featurizer import CLIPFeaturizer

    datasets = args.dataset
    _check_weights(args.model, args.pretrained)

    def featurizer_factory():
        return CLIPFeaturizer(
            args.model, pretrained=args.pretrained, device=args.device,
            precision=args.precision, batch_size=args.batch_size,
            num_workers=args.num_workers, normalize=False, cache_dir=args.cache_dir,
        ).fit(None)

    text_encoder = CLIPTextEncoder(args.model, args.pretrained, device=args.device,
                                   precision=args.precision, cache_dir=args.cache_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    missing = []
    for key in datasets:
        try:
            extract_dataset(DATASETS[key], args, featurizer_factory, text_encoder)
        except FileNotFoundError as exc:  # the other datasets still run
            print(f"{key}: skipped: {exc}")
            missing.append(key)
    if missing:
        print(f"Not found under {args.dataset_root}: {', '.join(missing)}.")
    return 1 if missing else 0
