"""Featurize many images on a Dask or Ray cluster, into Parquet shards that a rerun resumes.

The images are cut into shards of ``shard_size`` paths, in order; each shard becomes one
Parquet file ``shard-000000.parquet``, ... in ``output_dir`` with the columns ``path``
and ``embedding`` (one fixed-size list of float32 per image). A shard file appears only
once it is complete (written under a temporary name, then renamed), so a run that fails
or is killed leaves whole shards behind, and the next run with the same arguments
computes only the missing ones. :func:`read_features` gives back the paths and the
embeddings, in the order of ``paths``.

The engines schedule; this module only cuts the work and writes the files. Each worker
(a Dask worker process, a Ray actor) loads the featurizer's model once, at its first
shard, and keeps it for the next ones (the featurizer pickles without weights). Nothing
here is imported by ``import sklearn_cmm``; Dask, Ray and pyarrow are imported when a
function needs them (extras ``sklearn-cmm[dask]``, ``sklearn-cmm[ray]``).
"""

import importlib
import os
from numbers import Integral
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

SHARD_NAME = "shard-{:06d}.parquet"


def _require(module, *extras):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        hint = " or ".join(f"pip install 'sklearn-cmm[{extra}]'" for extra in extras)
        raise ImportError(f"{module} is needed here and is not installed: {hint}") from error


def _pyarrow():
    _require("pyarrow.parquet", "dask", "ray")  # both extras install pyarrow
    import pyarrow
    import pyarrow.parquet

    return pyarrow, pyarrow.parquet


def pending_shards(paths, output_dir, shard_size):
    """The shards of ``paths`` not yet written to ``output_dir`` (made if missing).

    A shard file already in ``output_dir`` must hold exactly its shard's paths, and there
    must be no shard beyond the last of ``paths`` (:func:`read_features` reads them all),
    else ``output_dir`` belongs to other inputs or another ``shard_size``: a ValueError.

    Parameters
    ----------
    paths : sequence of str or path-like
        All the image paths, in order.
    output_dir : str or path-like
        The folder of the shard files.
    shard_size : int
        Paths per shard; the last shard may have fewer.

    Returns
    -------
    pending : list of (Path, list of str, int)
        The target file, the paths and the index of the first path of each missing
        shard.
    n_shards : int
        The number of shards of ``paths``, written or not.
    """
    _, pq = _pyarrow()
    if not isinstance(shard_size, Integral) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer; got {shard_size!r}.")
    paths = [os.fspath(path) for path in paths]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    shards = [paths[start : start + shard_size] for start in range(0, len(paths), shard_size)]
    # by number: a run on more inputs, interrupted, can leave a gap before such a shard
    beyond = [file.name for file in _shard_files(output_dir)
              if int(file.stem.split("-")[1]) >= len(shards)]
    if beyond:
        raise ValueError(
            f"{output_dir} holds shards beyond the {len(shards)} of these inputs "
            f"(first {beyond[0]}); use a new output_dir for other inputs or "
            "another shard_size."
        )
    pending = []
    for index, shard in enumerate(shards):
        target = output_dir / SHARD_NAME.format(index)
        if not target.exists():
            pending.append((target, shard, index * shard_size))
        elif pq.read_table(target, columns=["path"]).column("path").to_pylist() != shard:
            raise ValueError(
                f"{target} holds other paths than shard {index} of these inputs; "
                "use a new output_dir for other inputs or another shard_size."
            )
    return pending, len(shards)


def write_shard(featurizer, paths, target, first_index=0):
    """Embed ``paths`` with ``featurizer`` and write them to the Parquet file ``target``.

    The file appears complete or not at all. ``featurizer.fit`` loads the model, from the
    process's model cache after the first shard. With ``train_views``, each image gets
    the views it gets in ``featurizer.fit_transform`` of all the inputs.

    Parameters
    ----------
    featurizer : CLIPFeaturizer
        Embeds the paths as its ``fit_transform`` does.
    paths : list of str
        The image paths of one shard, stored in the ``path`` column.
    target : str or path-like
        The Parquet file to write, replaced if it exists.
    first_index : int, default=0
        The place of ``paths[0]`` in all the inputs.

    Returns
    -------
    target : str
        ``target``, as a str.
    """
    pa, pq = _pyarrow()
    X = np.asarray(featurizer.fit(paths)._embed(paths, featurizer.train_views, first_index))
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])
    table = pa.table({"path": pa.array(paths, pa.string()), "embedding": embedding})
    target = Path(target)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    pq.write_table(table, partial)
    os.replace(partial, target)
    return str(target)


def _shard_files(output_dir):
    """The shard files in ``output_dir``, in shard order."""
    return sorted(Path(output_dir).glob(SHARD_NAME.replace("{:06d}", "[0-9]" * 6)))


def read_features(output_dir):
    """The paths and embeddings written to ``output_dir``, in shard order.

    Parameters
    ----------
    output_dir : str or path-like
        A folder written by :func:`featurize_with_dask` or :func:`featurize_with_ray`.

    Returns
    -------
    paths : list of str
    X : ndarray of shape (n_images, embed_dim), dtype float32
    """
    _, pq = _pyarrow()
    files = _shard_files(output_dir)
    if not files:
        raise FileNotFoundError(f"no shards in {output_dir}")
    tables = [pq.read_table(file) for file in files]
    paths = [path for table in tables for path in table.column("path").to_pylist()]
    X = np.concatenate(
        [
            np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(
                table.num_rows, -1
            )
            for table in tables
        ]
    )
    return paths, X


def _progress(total, done, verbose):
    return tqdm(total=total, initial=done, unit="shard", disable=not verbose,
                desc="featurizing")


def featurize_with_dask(paths, featurizer, output_dir, *, shard_size=4096, client=None,
                        resources=None, verbose=True):
    """Embed images on a Dask cluster, one task per shard, into Parquet shards.

    Shards already in ``output_dir`` are skipped (see :mod:`sklearn_cmm.parallel`).

    Parameters
    ----------
    paths : sequence of str or path-like
        Image files, as the workers see them (a shared file system).
    featurizer : CLIPFeaturizer
        Sent to every task (it pickles without its weights); each worker process loads
        its model once.
    output_dir : str or path-like
        Where the shards go; made if missing.
    shard_size : int, default=4096
        Images per shard (one task, one file).
    client : distributed.Client or None, default=None
        None: the current client (``distributed.get_client()``).
    resources : dict or None, default=None
        What each task needs of the workers' resources, e.g. ``{"GPU": 1}`` for workers
        started with ``--resources GPU=1`` (passed to ``client.submit``).
    verbose : bool, default=True
        Show a progress bar of shards written.

    Returns
    -------
    written : list of str
        The shard files this call wrote (not those it skipped), sorted.

    Raises
    ------
    Exception
        The error of the first shard that failed (e.g. an unreadable image), once every
        other shard is written: a rerun after the fix computes the failed shards only.

    Examples
    --------
    >>> from distributed import Client, LocalCluster  # doctest: +SKIP
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
    >>> featurize_with_dask(paths, CLIPFeaturizer(), "features/")  # doctest: +SKIP
    >>> paths, X = read_features("features/")  # doctest: +SKIP
    """
    distributed = _require("distributed", "dask")
    client = distributed.get_client() if client is None else client
    pending, n_shards = pending_shards(paths, output_dir, shard_size)
    futures = [
        client.submit(write_shard, featurizer, shard, str(target), first, pure=False,
                      resources=resources)
        for target, shard, first in pending
    ]
    written, failure = [], None
    try:
        with _progress(n_shards, n_shards - len(pending), verbose) as bar:
            for future in distributed.as_completed(futures):
                # A failed shard does not stop the others: a running task cannot be
                # stopped anyway, and when this call returns nothing writes any more.
                if future.status == "error":
                    if failure is None:
                        failure = future
                else:
                    written.append(future.result())
                    bar.update()
        if failure is not None:
            failure.result()  # raises the first failed shard's error
    finally:
        client.cancel(futures)  # on an interrupt: no more shards; the written ones stay
    return sorted(written)


class _ShardWriter:
    """A Ray Data actor: one featurizer (one model) per actor, one shard per call."""

    def __init__(self, featurizer):
        self.featurizer = featurizer

    def __call__(self, batch):
        written = [
            write_shard(self.featurizer, list(shard), target, int(first))
            for target, shard, first in zip(batch["target"], batch["paths"], batch["first"])
        ]
        return {"written": np.asarray(written)}


def featurize_with_ray(paths, featurizer, output_dir, *, shard_size=4096, num_actors=2,
                       num_cpus_per_actor=1, num_gpus_per_actor=0, verbose=True):
    """Embed images with Ray Data, in an actor pool, into Parquet shards.

    ``map_batches`` over the pending shards with a pool of ``num_actors`` actors, each
    holding one featurizer and so one model (on its GPU with ``num_gpus_per_actor=1``:
    Ray sets the actor's visible device and ``device="auto"`` picks it). Shards already
    in ``output_dir`` are skipped (see :mod:`sklearn_cmm.parallel`). Ray must be
    initialised (``ray.init``) or it starts a local instance.

    Parameters
    ----------
    paths : sequence of str or path-like
        Image files, as the actors see them (a shared file system).
    featurizer : CLIPFeaturizer
        Given to each actor (it pickles without its weights).
    output_dir : str or path-like
        Where the shards go; made if missing.
    shard_size : int, default=4096
        Images per shard (one actor call, one file).
    num_actors : int, default=2
        Size of the actor pool.
    num_cpus_per_actor, num_gpus_per_actor : float, default=1 and 0
        Resources each actor reserves.
    verbose : bool, default=True
        Show a progress bar of shards written.

    Returns
    -------
    written : list of str
        The shard files this call wrote (not those it skipped), sorted.
    """
    _require("ray", "ray")
    import ray.data

    pending, n_shards = pending_shards(paths, output_dir, shard_size)
    if not pending:
        return []
    shards = ray.data.from_items(
        [{"target": str(target), "paths": shard, "first": first}
         for target, shard, first in pending],
        override_num_blocks=len(pending),
    )
    results = shards.map_batches(
        _ShardWriter,
        fn_constructor_args=(featurizer,),
        batch_size=1,
        concurrency=min(num_actors, len(pending)),
        num_cpus=num_cpus_per_actor,
        num_gpus=num_gpus_per_actor,
    )
    written = []
    with _progress(n_shards, n_shards - len(pending), verbose) as bar:
        for row in results.iter_rows():
            written.append(str(row["written"]))
            bar.update()
    return sorted(written)
