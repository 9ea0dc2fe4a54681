"""Tip-Adapter-F's training loss, in torch (float32, on the training device)."""

import torch
import torch.nn.functional as F


def tip_adapter_f_loss(zero_shot_logits, queries, keys, cache_labels, y, alpha, beta, *,
                       own_entries=None):
    """Cross-entropy of the Tip-Adapter logits of the queries, as a function of the keys.

    ``logits = zero_shot_logits + alpha * exp(-beta (1 - queries @ keys.T)) @ L`` with
    ``L`` the one-hot labels of the cache (summed per class without forming ``L``), the
    kernel entry of each query's own key left out with ``own_entries``.

    Parameters
    ----------
    zero_shot_logits : torch.Tensor of shape (n_queries, n_classes)
        Constant zero-shot logits of the queries.
    queries : torch.Tensor of shape (n_queries, dim)
        Unit query features.
    keys : torch.Tensor of shape (n_cache, dim)
        The cache keys being trained.
    cache_labels : torch.Tensor of shape (n_cache,)
        Class index of each key (int64).
    y : torch.Tensor of shape (n_queries,)
        Class index of each query (int64).
    alpha, beta : float
        Weight and sharpness of the cache.
    own_entries : torch.Tensor of shape (n_queries,) or (n_queries, k), or None, default=None
        Query ``i`` is cache item ``own_entries[i]``, or a view of the image whose views
        are the items ``own_entries[i]`` (int64).

    Returns
    -------
    loss : torch.Tensor
        A scalar: the mean cross-entropy.
    """
    kernel = torch.exp(beta * (queries @ keys.T - 1.0))
    if own_entries is not None:
        own = own_entries.reshape(len(own_entries), -1)
        rows = torch.arange(len(own), device=kernel.device)[:, None]
        kernel = kernel.index_put((rows, own), kernel.new_zeros(()))
    cache = zero_shot_logits.new_zeros(zero_shot_logits.shape).index_add(1, cache_labels, kernel)
    return F.cross_entropy(zero_shot_logits + alpha * cache, y)
