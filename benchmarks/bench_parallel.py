"""Throughput of featurizing JPEG files: one process vs a local Dask / Ray cluster.

For each model (random weights unless bundled: same FLOPs as the real ones, nothing to
download), on the same files:

* single, 1 thread: ``CLIPFeaturizer.fit_transform(paths)``, torch on one thread;
* single, N threads: the same with torch on ``--workers`` threads;
* dask: :func:`sklearn_cmm.parallel.featurize_with_dask` on a ``LocalCluster`` of
  ``--workers`` processes x 1 thread, cold (each worker loads the model: the first run)
  and warm (a second run into a new folder: the models are loaded);
* ray: :func:`sklearn_cmm.parallel.featurize_with_ray` with ``--workers`` actors of 1
  CPU (actors start and load the model on every call: always cold).

Cluster start-up is not timed. The features of every engine are checked equal to the
single-process ones. The machine's load average goes into the JSON: on a shared machine
the rates are only as steady as it.

Usage::

    python benchmarks/bench_parallel.py --n-images 1024 --models sklearn-cmm-fashion-tiny ViT-B-32
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
from bench_featurizer import make_jpegs

from sklearn_cmm import CLIPFeaturizer
from sklearn_cmm.parallel import featurize_with_dask, featurize_with_ray, read_features


def featurizer_of(model):
    pretrained = "bundled" if model.startswith("sklearn-cmm-") else None
    return CLIPFeaturizer(model, pretrained=pretrained, batch_size=32)


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def bench_model(model, paths, *, workers, shard_size, engines, scratch):
    rows = []
    featurizer = featurizer_of(model)
    featurizer.fit(None)  # the parent's model load is not timed
    for threads in sorted({1, workers}):
        torch.set_num_threads(threads)
        seconds, reference = timed(lambda: np.asarray(featurizer.transform(paths)))
        rows.append({"model": model, "engine": f"single, {threads} thread(s)",
                     "seconds": seconds})
    torch.set_num_threads(1)
    for engine, run in engines.items():
        for attempt in (["cold", "warm"] if engine == "dask" else ["cold"]):
            out = scratch / f"{model}-{engine}-{attempt}"
            seconds, _ = timed(lambda: run(paths, featurizer, out, shard_size=shard_size,
                                           verbose=False))
            _, X = read_features(out)
            rows.append({"model": model, "engine": f"{engine} {workers} workers, {attempt}",
                         "seconds": seconds, "equal": bool(np.array_equal(X, reference))})
    for row in rows:
        row["images_per_s"] = len(paths) / row["seconds"]
        row["speedup_vs_single_1_thread"] = rows[0]["seconds"] / row["seconds"]
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=1024)
    parser.add_argument("--models", nargs="+", default=["sklearn-cmm-fashion-tiny", "ViT-B-32"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--engines", nargs="+", default=["dask", "ray"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results/bench_parallel.json"))
    args = parser.parse_args()

    paths = [str(p) for p in make_jpegs(Path(tempfile.gettempdir()) / "sklearn_cmm_bench_jpegs",
                                        args.n_images)]
    load_start = os.getloadavg()
    engines, teardown = {}, []
    if "dask" in args.engines:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1,
                               dashboard_address=None)
        client = Client(cluster)
        engines["dask"] = featurize_with_dask
        teardown += [client.close, cluster.close]
    if "ray" in args.engines:
        import ray

        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        engines["ray"] = featurize_with_ray
        teardown.append(ray.shutdown)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for model in args.models:
            rows += bench_model(model, paths, workers=args.workers,
                                shard_size=args.shard_size, engines=engines,
                                scratch=Path(scratch))
    for close in teardown:
        close()
    load_end = os.getloadavg()

    print(f"{args.n_images} JPEG files, shards of {args.shard_size}; "
          f"load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end")
    print(f"{'model':26s} {'engine':26s} {'seconds':>8s} {'images/s':>9s} {'speedup':>8s} equal")
    for row in rows:
        print(f"{row['model']:26s} {row['engine']:26s} {row['seconds']:8.1f} "
              f"{row['images_per_s']:9.1f} {row['speedup_vs_single_1_thread']:7.2f}x "
              f"{row.get('equal', '')}")
    result = {
        "n_images": args.n_images, "shard_size": args.shard_size, "workers": args.workers,
        "rows": rows, "loadavg_start": load_start, "loadavg_end": load_end,
        "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "torch": torch.__version__, "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
