"""Temperature scaling of logits and the calibration error of probabilities."""

import numpy as np
from scipy.optimize import minimize_scalar

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


def _temperature_objective(logits, y_encoded, smoothing):
    """:func:`temperature_log_loss` of fixed logits as a function of the temperature, and
    whether the logits depend on the class at all.

    With ``g = logits - rowmax`` the loss is ``mean_i(log sum_c exp(g_ic / t) - a_i / t)``,
    ``a_i = (1 - smoothing) g_iy + smoothing mean_c g_ic``: what does not depend on ``t``
    is computed once, and each temperature costs one exponential pass over the logits
    instead of a log-softmax (a temperature search evaluates about twenty; at 16,000 x
    1000 logits a log-softmax took 0.2 s).
    """
    logits = np.asarray(logits, dtype=np.float64)
    gaps = logits - logits.max(axis=1, keepdims=True)
    # rows constant up to rounding carry no information on the scale
    informative = bool(np.any(-gaps > 1e-12 * max(1.0, np.abs(logits).max())))
    target = ((1 - smoothing) * gaps[np.arange(len(y_encoded)), y_encoded]
              + smoothing * gaps.mean(axis=1))
    scaled = np.empty_like(gaps)

    def loss(temperature):
        np.multiply(gaps, 1.0 / temperature, out=scaled)
        log_partition = np.log(np.exp(scaled, out=scaled).sum(axis=1))
        return float(np.mean(log_partition - target / temperature))

    return loss, informative


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
    return _temperature_objective(logits, y_encoded, smoothing)[0](temperature)


def _search_temperature(logits, y_encoded, smoothing, log_bounds):
    """:func:`fit_temperature`'s temperature and :func:`temperature_log_loss` there."""
    loss, informative = _temperature_objective(logits, y_encoded, smoothing)
    if not informative:
        return 1.0, loss(1.0)
    result = minimize_scalar(
        lambda log_t: loss(np.exp(log_t)),
        bounds=log_bounds,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x)), float(result.fun)


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
    return _search_temperature(logits, y_encoded, smoothing, log_bounds)[0]


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
    return _search_temperature(logits, y_encoded, laplace_smoothing(len(y_encoded)),
                               LOG_TEMPERATURE_BOUNDS)[1]


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
