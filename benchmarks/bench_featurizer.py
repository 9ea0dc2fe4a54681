"""Throughput of CLIPFeaturizer.transform on real JPEG files, against two references.

For each model (random weights: same FLOPs as the real ones, nothing to download):

* ceiling: the model's forward alone on images preprocessed beforehand (tensors already
  on the device), in batches of ``--batch-size``;
* featurizer: ``CLIPFeaturizer.transform`` on the file paths (decode, preprocess, encode);
* naive: a loop that opens, preprocesses and encodes one image at a time.

The three use the very model object of the featurizer (same device and precision), so
the ratios measure the featurizer's pipeline alone. The JPEGs are random crops of
scikit-learn's two sample photos, resized, written once to a cache folder. The machine's
load average goes into the JSON: on a shared machine the rates are only as steady as it.

Usage::

    python benchmarks/bench_featurizer.py --n-images 512 --models RN50 ViT-B-16
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from sklearn_cmm import _clip
from sklearn_cmm._torch import resolve_device
from sklearn_cmm.featurizer import CLIPFeaturizer


def make_jpegs(folder, n_images, seed=0):
    """``n_images`` JPEG files cut from the sample photos, made once and reused."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"image_{i:05d}.jpg" for i in range(n_images)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        rng = np.random.default_rng(seed)
        photos = load_sample_images().images
        for path in paths:  # every file drawn in order, so a folder's files never change
            photo = photos[rng.integers(len(photos))]
            height, width, _ = photo.shape
            h, w = rng.integers(height // 2, height + 1), rng.integers(width // 3, width + 1)
            top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            scale = rng.uniform(0.6, 1.4)  # dataset-like sizes: about 130 to 900 pixels
            crop = Image.fromarray(photo[top : top + h, left : left + w])
            crop = crop.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
            if path in missing:
                crop.save(path, quality=90)
    return paths


def bench_model(model, paths, *, device, batch_size, num_workers, naive_images):
    """Images/s of the ceiling, the featurizer and the naive loop for one model."""
    featurizer = CLIPFeaturizer(
        model, pretrained=None, device=device, batch_size=batch_size, num_workers=num_workers
    )
    featurizer.fit(None)
    loaded = _clip.load_model(model, None, device=device)
    precision = _clip.resolve_precision("auto", loaded.device)
    transform = loaded.preprocess
    sync = torch.cuda.synchronize if loaded.device.type == "cuda" else (lambda: None)

    def encode(x):
        with _clip.autocast(loaded.device, precision):
            return loaded.model.encode_image(x).float()

    # Warm-up (allocator, oneDNN primitives, cuDNN autotuning) outside every timing.
    featurizer.transform(paths[:batch_size])

    # (a) ceiling: preprocessed tensors, already on the device.
    tensors = torch.stack([transform(Image.open(p)) for p in paths]).to(loaded.device)
    with torch.inference_mode():
        sync()
        start = time.perf_counter()
        ceiling_out = [encode(tensors[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
        sync()
        ceiling_s = time.perf_counter() - start
    ceiling_out = torch.nn.functional.normalize(torch.cat(ceiling_out), dim=-1).cpu().numpy()
    del tensors
    print(f"  ceiling: {len(paths) / ceiling_s:.2f} images/s", flush=True)

    # (b) the featurizer on file paths.
    start = time.perf_counter()
    features = featurizer.transform(paths)
    featurizer_s = time.perf_counter() - start
    print(f"  featurizer: {len(paths) / featurizer_s:.2f} images/s", flush=True)

    # (c) naive loop: open, preprocess, encode, one image at a time.
    naive_paths = paths[:naive_images]
    with torch.inference_mode():
        encode(transform(Image.open(paths[0])).unsqueeze(0).to(loaded.device))  # warm-up
        sync()
        start = time.perf_counter()
        for path in naive_paths:
            encode(transform(Image.open(path)).unsqueeze(0).to(loaded.device)).cpu()
        naive_s = time.perf_counter() - start

    ceiling = len(paths) / ceiling_s
    ours = len(paths) / featurizer_s
    naive = len(naive_paths) / naive_s
    return {
        "model": model,
        "n_images": len(paths),
        "n_images_naive": len(naive_paths),
        "precision": precision,
        "ceiling_img_per_s": ceiling,
        "featurizer_img_per_s": ours,
        "naive_img_per_s": naive,
        "fraction_of_ceiling": ours / ceiling,
        "speedup_vs_naive": ours / naive,
        "max_abs_diff_vs_ceiling": float(np.abs(features - ceiling_out).max()),
    }


def format_table(results):
    header = (
        f"{'model':<10} {'images':>6} {'ceiling':>8} {'featurizer':>10} {'% ceiling':>9} "
        f"{'naive':>7} {'x naive':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r['model']:<10} {r['n_images']:>6} {r['ceiling_img_per_s']:>8.2f} "
            f"{r['featurizer_img_per_s']:>10.2f} {100 * r['fraction_of_ceiling']:>8.1f}% "
            f"{r['naive_img_per_s']:>7.2f} {r['speedup_vs_naive']:>7.2f}"
        )
    lines.append(
        "images/s; ceiling: the forward alone on preprocessed tensors; naive: open, "
        "preprocess and encode one image at a time"
    )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=512)
    parser.add_argument("--models", nargs="+", default=["RN50", "ViT-B-16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument(
        "--naive-images",
        type=int,
        default=None,
        help="images for the naive loop (default: all); its rate is per image",
    )
    parser.add_argument(
        "--image-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "sklearn_cmm_bench_jpegs",
        help="where the JPEG files are made once and reused",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "bench_featurizer.json",
    )
    args = parser.parse_args(argv)

    paths = make_jpegs(args.image_dir, args.n_images)
    naive_images = args.naive_images or args.n_images
    results = []
    load_before = os.getloadavg()
    for model in args.models:
        print(f"benchmarking {model} on {len(paths)} images...", flush=True)
        results.append(
            bench_model(
                model,
                paths,
                device=args.device,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                naive_images=naive_images,
            )
        )
        _clip.clear_model_cache()
        print(format_table(results[-1:]), flush=True)
        # Written after each model, so that a long run interrupted keeps what it measured.
        write_report(args, results, load_before)
    print(format_table(results))
    print(f"wrote {args.out}")


def write_report(args, results, load_before):
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "results": results,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "device": str(resolve_device(args.device)),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [load_before, os.getloadavg()],
        "machine": platform.platform(),
        "processor": platform.processor(),
    }
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
