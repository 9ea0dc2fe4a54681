"""Training-free Tip-Adapter (Zhang et al., ECCV 2022)."""

import numpy as np


def tip_adapter_logits(zero_shot_logits, affinity, cache_onehot, alpha, beta, *, leave_one_out=False):
    """Zero-shot logits plus the cache model's ``alpha * exp(-beta (1 - A)) @ L``.

    Parameters
    ----------
    zero_shot_logits : ndarray of shape (n_queries, n_classes)
        ``logit_scale * cos(query, class prototype)``.
    affinity : ndarray of shape (n_queries, n_cache)
        Cosine similarity of each query to each cached training image.
    cache_onehot : ndarray of shape (n_cache, n_classes)
        One-hot labels of the cache.
    alpha : float
        Weight of the cache logits.
    beta : float
        Sharpness of the affinity kernel.
    leave_one_out : bool, default=False
        Queries are the cache itself (square ``affinity``): leave each query's own entry
        out, for cross-validating ``alpha`` and ``beta`` on the training shots.

    Returns
    -------
    logits : ndarray of shape (n_queries, n_classes)
    """
    kernel = np.exp(-beta * (1.0 - affinity))
    if leave_one_out:
        np.fill_diagonal(kernel, 0.0)
    return zero_shot_logits + alpha * (kernel @ cache_onehot)
