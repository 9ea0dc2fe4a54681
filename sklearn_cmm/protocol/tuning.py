"""Hyper-parameter choice on the few-shot validation set, and the one test-set score.

:func:`tune_and_fit` sees the training shots and the validation shots, nothing else: it
fits every candidate of the method's search space (:func:`sklearn_cmm.protocol.methods.search_space`)
on the training shots, scores it on the validation shots and keeps the best fitted
estimator (the first among equals, so a space's earlier candidates win ties). The
winner was fitted on the training shots alone, so it is the model a refit would give
(every fit is seeded). Only then does :func:`test_accuracy` see the test set, once.
"""

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .methods import make_classifier, search_space


@dataclass
class TuningResult:
    """The chosen estimator and how it was chosen."""

    estimator: object
    params: dict
    val_accuracy: float
    fit_time_s: float
    tuning_time_s: float
    candidates: list = field(default_factory=list)  # (params, val_accuracy, fit_time_s)


def tune_and_fit(method, X_train, y_train, X_val, y_val, *, text=None, seed=None,
                 device="auto", overrides=None, search=True):
    """Fit each candidate on the training shots, keep the best on the validation shots.

    Parameters
    ----------
    method : str
        A name of :data:`sklearn_cmm.protocol.methods.METHODS`.
    X_train, y_train : ndarray
        The few-shot training set.
    X_val, y_val : ndarray
        The few-shot validation set (disjoint from the training set).
    text : dict or None
        ``text_features`` and ``text_projection`` for
        :func:`~sklearn_cmm.protocol.methods.make_classifier`.
    seed : int or None
        ``random_state`` of every candidate.
    device : str
    overrides : dict or None
        Parameters of every candidate that does not set them itself.
    search : bool, default=True
        False fits the method's defaults only (still scored on validation, for the record).

    Returns
    -------
    TuningResult
    """
    text, overrides = text or {}, overrides or {}
    candidates = search_space(method) if search else [{}]
    start = time.perf_counter()
    best, tried = None, []
    for params in candidates:
        estimator = make_classifier(method, **text, random_state=seed, device=device,
                                    **{**overrides, **params})
        fit_start = time.perf_counter()
        with warnings.catch_warnings():
            # 1 shot a class is "more classes than half the samples": expected here.
            warnings.filterwarnings("ignore", message="The number of unique classes is greater")
            estimator.fit(X_train, y_train)
        fit_time = time.perf_counter() - fit_start
        accuracy = float(np.mean(estimator.predict(X_val) == y_val))
        tried.append((dict(params), accuracy, fit_time))
        if best is None or accuracy > best[2]:
            best = (estimator, dict(params), accuracy, fit_time)
    estimator, params, accuracy, fit_time = best
    return TuningResult(estimator, params, accuracy, fit_time,
                        time.perf_counter() - start, tried)


def test_accuracy(estimator, X_test, y_test, classes=None):
    """Top-1 accuracy; with ``classes``, the prediction is restricted to those labels.

    ``classes`` serves ImageNet-A and -R, whose images cover 200 of ImageNet's 1000
    classes: as in CoOp, the model chooses among those 200 only.
    """
    if classes is None:
        return float(np.mean(estimator.predict(X_test) == y_test))
    columns = np.searchsorted(estimator.classes_, classes)
    if not np.array_equal(estimator.classes_[columns], classes):
        raise ValueError("The restricted classes are not all classes of the estimator.")
    scores = estimator.decision_function(X_test)[:, columns]
    return float(np.mean(classes[np.argmax(scores, axis=1)] == y_test))


test_accuracy.__test__ = False  # not a pytest test, despite the name
