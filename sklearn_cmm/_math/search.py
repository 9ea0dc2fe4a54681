"""Cheap hyper-parameter search over blend weights whose score matrices are fixed."""

import numpy as np
from sklearn.utils import check_random_state


def random_candidates(space, defaults, n_trials, random_state=None):
    """``defaults`` first, then ``n_trials - 1`` draws uniform in the boxes of ``space``.

    Parameters
    ----------
    space : dict of str -> (float, float)
        Search interval of each parameter.
    defaults : dict of str -> float
        The estimator's own values; tried first so that they win ties.
    n_trials : int
    random_state : int, RandomState instance or None

    Returns
    -------
    candidates : list of dict
    """
    rng = check_random_state(random_state)
    draws = [
        {name: float(rng.uniform(low, high)) for name, (low, high) in space.items()}
        for _ in range(n_trials - 1)
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
