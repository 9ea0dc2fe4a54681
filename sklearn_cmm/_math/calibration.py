"""Temperature scaling of logits and the calibration error of probabilities."""

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

#: Search interval of ``log(temperature)``: wide enough for logits off by any plausible
#: scale (CLIP's cosines times 100 for probabilities that want ten times sharper or
#: flatter), narrow enough that the bounded search stays a few dozen evaluations.
LOG_TEMPERATURE_BOUNDS = (np.log(1e-4), np.log(1e4))


def laplace_smoothing(n_samples):
    """Label smoothing of the temperature fit: ``1 / (n_samples + 2)``.

    Laplace's rule of succession: after ``n`` correct answers out of ``n`` the next is
    correct with probability about ``(n + 1) / (n + 2)``, not 1. Without it a fit on shots
    that are all classified correctly sends the temperature to 0 (probabilities of 0 and
    1); with it the optimum is finite, and the effect fades as the shots grow.
    """
    return 1.0 / (n_samples + 2)


def temperature_log_loss(logits, y_encoded, temperature, smoothing=0.0):
    """Mean cross-entropy of ``softmax(logits / temperature)`` against smoothed labels.

    The target of sample ``i`` is ``(1 - smoothing) * onehot(y_i) + smoothing / n_classes``;
    ``smoothing=0`` is the log-loss.

    Parameters
    ----------
    logits : ndarray of shape (n_samples, n_classes)
    y_encoded : ndarray of shape (n_samples,)
        Class indices.
    temperature : float
        Positive.
    smoothing : float, default=0.0
        In [0, 1).

    Returns
    -------
    loss : float
    """
    log_proba = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    true_class = log_proba[np.arange(len(y_encoded)), y_encoded]
    return float(-np.mean((1 - smoothing) * true_class + smoothing * log_proba.mean(axis=1)))


def fit_temperature(logits, y_encoded, smoothing=0.0, log_bounds=LOG_TEMPERATURE_BOUNDS):
    """The temperature minimising :func:`temperature_log_loss` on ``(logits, y_encoded)``.

    A bounded one-dimensional search over ``log(temperature)`` in
    :data:`LOG_TEMPERATURE_BOUNDS` (Brent's method; the loss is smooth and, for a fixed
    set of logits, has a single minimum in the log temperature away from the bounds).
    Logits that do not depend on the class (every row constant) carry no information on
    the scale: the temperature is then 1.

    Parameters
    ----------
    logits : ndarray of shape (n_samples, n_classes)
        Honest logits of labelled samples (not fitted on them).
    y_encoded : ndarray of shape (n_samples,)
        Class indices.
    smoothing : float, default=0.0
        Label smoothing, e.g. :func:`laplace_smoothing`; with 0 and every sample classified
        correctly the loss decreases toward temperature 0, and the temperature returned
        gives probabilities of 0 and 1.
    log_bounds : (float, float), default=LOG_TEMPERATURE_BOUNDS
        Interval of ``log(temperature)`` searched.

    Returns
    -------
    temperature : float
    """
    logits = np.asarray(logits, dtype=np.float64)
    spread = logits - logits.mean(axis=1, keepdims=True)
    if not np.any(np.abs(spread) > 1e-12 * max(1.0, np.abs(logits).max())):
        return 1.0
    result = minimize_scalar(
        lambda log_t: temperature_log_loss(spread, y_encoded, np.exp(log_t), smoothing),
        bounds=log_bounds,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def calibrated_log_loss(logits, y_encoded):
    """Log-loss of ``logits`` at their fitted temperature (Laplace-smoothed, as fitted).

    Scores held-out logits by how well they rank and separate the classes, whatever
    their scale: a smooth criterion to compare blends of logit terms on few samples,
    where accuracy moves in steps of one sample.

    Parameters
    ----------
    logits : ndarray of shape (n_samples, n_classes)
        Honest logits of labelled samples.
    y_encoded : ndarray of shape (n_samples,)
        Class indices.

    Returns
    -------
    loss : float
        :func:`temperature_log_loss` at :func:`fit_temperature`, both with
        :func:`laplace_smoothing`.
    """
    smoothing = laplace_smoothing(len(y_encoded))
    temperature = fit_temperature(logits, y_encoded, smoothing)
    return temperature_log_loss(logits, y_encoded, temperature, smoothing)


def expected_calibration_error(y_encoded, proba, n_bins=15):
    """Top-label expected calibration error with ``n_bins`` equal-width confidence bins.

    ``sum_b |B_b| / n * |accuracy(B_b) - mean confidence(B_b)|``, the confidence of a
    sample being its largest probability and bin ``b`` holding confidences in
    ``((b - 1) / n_bins, b / n_bins]`` (the first bin also holds 0).

    Parameters
    ----------
    y_encoded : ndarray of shape (n_samples,)
        Class indices (columns of ``proba``).
    proba : ndarray of shape (n_samples, n_classes)
    n_bins : int, default=15

    Returns
    -------
    ece : float
        In [0, 1].
    """
    proba = np.asarray(proba, dtype=np.float64)
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_encoded).astype(np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    gap = np.bincount(bins, weights=correct - confidence, minlength=n_bins)
    return float(np.sum(np.abs(gap)) / len(confidence))
