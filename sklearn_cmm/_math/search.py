"""Candidates of the hyper-parameter searches and the held-out shots they are scored on."""

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


#: Most held-out shots a search scores (and a temperature is fitted on): the search's cost
#: stops growing with the number of shots.
MAX_HELD_OUT = 1000


def held_out_subset(n_samples, rng, max_size):
    """Indices of the held-out shots to score: all, or a random ``max_size`` of them.

    Parameters
    ----------
    n_samples : int
    rng : numpy.random.RandomState
        Drawn from only when ``n_samples > max_size``.
    max_size : int
        At most this many (the estimators pass :data:`MAX_HELD_OUT`).

    Returns
    -------
    index : ndarray of int
        Sorted, ``min(n_samples, max_size)`` distinct indices.
    """
    if n_samples <= max_size:
        return np.arange(n_samples)
    return np.sort(rng.choice(n_samples, max_size, replace=False))


def spread_subset(y_encoded, max_size):
    """Indices of at most ``max_size`` samples spread evenly over the classes, without
    randomness: all of them, or ``max_size`` evenly spaced in the order (class, position
    within the class).

    For a score whose every shot is costly and whose estimate needs no more than
    ``max_size`` of them (a temperature, a choice among a few weights), and that must
    stay a function of the input alone (no random state): each class keeps its share
    of the samples, to within one.

    Parameters
    ----------
    y_encoded : ndarray of shape (n_samples,)
        Class indices.
    max_size : int
        At most this many (the estimators pass :data:`MAX_HELD_OUT`).

    Returns
    -------
    index : ndarray of int
        Sorted, ``min(n_samples, max_size)`` distinct indices.
    """
    n_samples = len(y_encoded)
    if n_samples <= max_size:
        return np.arange(n_samples)
    by_class = np.argsort(y_encoded, kind="stable")
    return np.sort(by_class[np.arange(max_size) * n_samples // max_size])
