"""Cheap hyper-parameter search over blend weights whose score matrices are fixed."""

import math

import numpy as np
from sklearn.utils import check_random_state


def random_candidates(space, defaults, n_trials, random_state=None, *, shared=None):
    """``defaults`` first, then ``n_trials - 1`` draws uniform in the boxes of ``space``.

    With ``shared`` (a parameter name), that parameter takes only
    ``n = ceil(sqrt(n_trials - 1))`` values, evenly spaced over its interval with one
    random offset (``low + (k + u) (high - low) / n``), each shared by a run of adjacent
    candidates whose other parameters are drawn one by one: for a search whose cost is
    in what that parameter changes (Tip-Adapter's kernel sharpness), the draws cost
    ``sqrt(n_trials)`` expensive evaluations instead of ``n_trials``, and a stratified
    grid covers the interval more evenly than as many random draws.

    Parameters
    ----------
    space : dict of str -> (float, float)
        Search interval of each parameter.
    defaults : dict of str -> float
        The estimator's own values; tried first so that they win ties.
    n_trials : int
    random_state : int, RandomState instance or None
    shared : str or None, default=None
        The parameter whose values runs of candidates share.

    Returns
    -------
    candidates : list of dict
    """
    rng = check_random_state(random_state)
    n_draws = n_trials - 1
    if shared is None:
        draws = [
            {name: float(rng.uniform(low, high)) for name, (low, high) in space.items()}
            for _ in range(n_draws)
        ]
        return [dict(defaults), *draws]
    n_values = math.isqrt(n_draws - 1) + 1 if n_draws else 0  # ceil(sqrt(n_draws))
    low, high = space[shared]
    offset = rng.uniform()
    values = [float(low + (k + offset) * (high - low) / n_values) for k in range(n_values)]
    draws = [
        {
            name: values[i * len(values) // n_draws] if name == shared
            else float(rng.uniform(low, high))
            for name, (low, high) in space.items()
        }
        for i in range(n_draws)
    ]
    return [dict(defaults), *draws]


def best_candidate(logits_of, candidates, y_encoded):
    """The candidate whose logits classify ``y_encoded`` best (the first among equals).

    Parameters
    ----------
    logits_of : callable
        ``logits_of(**candidate) -> (n_samples, n_classes)``, computed from score
        matrices that do not change between candidates.
    candidates : list of dict
    y_encoded : ndarray of shape (n_samples,)

    Returns
    -------
    best : dict
    accuracy : float
        Its accuracy.
    """
    accuracies = [np.mean(np.argmax(logits_of(**c), axis=1) == y_encoded) for c in candidates]
    best = int(np.argmax(accuracies))
    return candidates[best], float(accuracies[best])
