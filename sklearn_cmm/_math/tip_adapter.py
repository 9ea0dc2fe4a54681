"""Tip-Adapter (Zhang et al., ECCV 2022): its logits and the held-out search of its weights."""

import numpy as np
from scipy import sparse


def cache_indicator(cache_labels, n_classes):
    """The cache's one-hot labels as a sparse ``(n_cache, n_classes)`` matrix.

    A dense one-hot matrix is ``n_cache x n_classes``: 640 million entries for 16 shots of
    10,000 classes. The sparse one holds ``n_cache`` entries, and ``kernel @ indicator``
    sums each query's kernel per class in one pass over the kernel.
    """
    n_cache = len(cache_labels)
    # Column-compressed: ``dense @ csc`` is ~4x faster than ``dense @ csr`` in scipy.
    return sparse.csc_array(
        (np.ones(n_cache), (np.arange(n_cache), cache_labels)), shape=(n_cache, n_classes)
    )


def tip_adapter_logits(zero_shot_logits, affinity, cache_onehot, alpha, beta, *, own_entries=None):
    """Zero-shot logits plus the cache model's ``alpha * exp(-beta (1 - A)) @ L``.

    Parameters
    ----------
    zero_shot_logits : ndarray of shape (n_queries, n_classes)
        ``logit_scale * cos(query, class prototype)``.
    affinity : ndarray of shape (n_queries, n_cache)
        Cosine similarity of each query to each cached training image.
    cache_onehot : ndarray or sparse matrix of shape (n_cache, n_classes)
        One-hot labels of the cache (:func:`cache_indicator` gives the sparse one).
    alpha : float
        Weight of the cache logits.
    beta : float
        Sharpness of the affinity kernel.
    own_entries : ndarray of int of shape (n_queries,) or (n_queries, k), or None, default=None
        When the queries are cache items: query ``i`` is item ``own_entries[i]`` (or an
        image whose views are the items ``own_entries[i]``), whose kernel entries are
        left out (leave-one-out logits of the training shots).

    Returns
    -------
    logits : ndarray of shape (n_queries, n_classes)
    """
    kernel = np.exp(-beta * (1.0 - affinity))
    if own_entries is not None:
        own = np.reshape(own_entries, (len(own_entries), -1))
        kernel[np.arange(len(own))[:, None], own] = 0.0
    return zero_shot_logits + alpha * np.asarray(kernel @ cache_onehot)


def correct_counts(zero_shot_logits, queries, keys, cache_labels, truth, n_classes, candidates,
                   *, own_entries=None, block_entries=2**22):
    """How many queries each ``(alpha, beta)`` candidate classifies right with a cache.

    Each query is classified by its zero-shot logits plus the cache model of ``keys``
    (without the query's own entry when the queries are cache items: leave-one-out).
    The cost is one affinity product (``n_queries x n_cache x dim``), one kernel per
    distinct ``beta`` (``n_queries x n_cache``: exponentials, or, for evenly spaced
    betas, one product with the kernel of the previous beta, as
    ``exp(b' u) = exp(b u) exp((b' - b) u)``) with its class sums, and one
    ``n_queries x n_classes`` argmax per candidate: candidates sharing a ``beta`` share
    the kernel, since ``alpha`` only weighs it, and with many classes only the classes
    that can win for some ``alpha`` of the kernel's candidates are compared (see
    ``_contenders``; the argmax is exact, ties included). Queries go in blocks of at most
    ``block_entries`` affinities, so memory stays bounded whatever the cache size.

    Parameters
    ----------
    zero_shot_logits : ndarray of shape (n_queries, n_classes)
        The zero-shot logits of the queries (their text prototypes' or, text-free,
        :func:`~sklearn_cmm._math.basic.loo_prototype_cosine`, times ``logit_scale``).
    queries : ndarray of shape (n_queries, dim)
        L2-normalised queries.
    keys : ndarray of shape (n_cache, dim)
        The cache keys (the normalised training images, or Tip-Adapter-F's trained keys).
    cache_labels : ndarray of shape (n_cache,)
        Class index of each key.
    truth : ndarray of shape (n_queries,)
        Class index of each query.
    n_classes : int
    candidates : list of dict
        ``{"alpha": float, "beta": float}`` each.
    own_entries : ndarray of int of shape (n_queries,) or (n_queries, k), or None, default=None
        Query ``i`` is cache item ``own_entries[i]`` (or the image whose views are the
        items ``own_entries[i]``), left out of its own cache.
    block_entries : int, default=2**22
        Largest ``n_block_queries x n_cache`` affinity block.

    Returns
    -------
    n_correct : ndarray of int of shape (n_candidates,)
    """
    # Class sums of the kernel as (n_classes, n_cache) @ (n_cache, n_block): the sparse
    # indicator times a C-ordered kernel, with no copy.
    indicator = cache_indicator(cache_labels, n_classes).T.tocsr()
    by_beta = {}
    for i, candidate in enumerate(candidates):
        by_beta.setdefault(candidate["beta"], []).append(i)
    betas = sorted(by_beta)
    correct = np.zeros(len(candidates), dtype=int)
    block = max(1, block_entries // len(keys))
    for start in range(0, len(queries), block):
        columns = np.arange(len(queries[start : start + block]))
        zero_shot = np.ascontiguousarray(zero_shot_logits[start : start + block].T)
        truth_block = truth[start : start + block]
        shifted = keys @ queries[start : start + block].T  # affinity - 1, (n_cache, n_block)
        shifted -= 1.0
        kernel = np.empty_like(shifted)
        step = step_size = None
        for k, beta in enumerate(betas):
            size = beta - betas[k - 1] if k else None
            next_size = betas[k + 1] - beta if k + 1 < len(betas) else None
            if step is not None and np.isclose(size, step_size, rtol=1e-9, atol=0):
                kernel *= step
            elif size is not None and next_size is not None and np.isclose(
                size, next_size, rtol=1e-9, atol=0
            ):  # the start of evenly spaced betas: one exponential serves them all
                step, step_size = np.exp(size * shifted), size
                kernel *= step
            else:
                step = step_size = None
                np.multiply(shifted, beta, out=kernel)
                np.exp(kernel, out=kernel)
                if own_entries is not None:  # each query's own entries
                    own = np.reshape(own_entries[start : start + block], (len(columns), -1))
                    kernel[own, columns[:, None]] = 0.0
            cache = indicator @ kernel  # (n_classes, n_block)
            members = by_beta[beta]
            keep = _contenders(zero_shot, cache, max(candidates[i]["alpha"] for i in members))
            z, c = (zero_shot, cache) if keep is None else (
                np.take_along_axis(zero_shot, keep, 0), np.take_along_axis(cache, keep, 0)
            )
            logits = np.empty_like(z)
            for i in members:
                np.multiply(c, candidates[i]["alpha"], out=logits)
                logits += z
                predicted = np.argmax(logits, axis=0)
                if keep is not None:
                    predicted = keep[predicted, columns]
                correct[i] += np.count_nonzero(predicted == truth_block)
    return correct


def _contenders(zero_shot, cache, max_alpha):
    """Sorted ``(k, n_queries)`` indices of the classes that can win for ``alpha`` in
    ``[0, max_alpha]``, or None when that is not much fewer than all classes.

    ``zero_shot + alpha cache`` is linear in ``alpha``: a class below the ``alpha = 0``
    winner at ``alpha = 0`` and at ``max_alpha`` is below it in between, so it never wins
    (nor ties). Keeping, for every query, the top ``k`` classes at ``max_alpha`` (``k``
    the most that reach the winner's value there), in class order, gives the same argmax,
    first index among equals included.
    """
    n_classes, n_queries = zero_shot.shape
    at_max = zero_shot + max_alpha * cache
    winner = np.argmax(zero_shot, axis=0)
    bar = at_max[winner, np.arange(n_queries)]
    k = int(np.max(np.count_nonzero(at_max >= bar, axis=0)))
    if k > n_classes // 4:
        return None
    return np.sort(np.argpartition(-at_max, k - 1, axis=0)[:k], axis=0)
