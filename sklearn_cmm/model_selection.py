"""Few-shot cross-validation: draw ``n_shots`` training samples per class, test on the rest."""

from numbers import Integral, Real

import numpy as np
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (
    Interval,
    validate_parameter_constraints,
    validate_params,
)
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _num_samples, column_or_1d


def _labels(y):
    """``y`` as a 1-D array of class labels: a column is raveled (with a warning, as in
    scikit-learn); any other 2-D ``y``, an empty one or continuous values are a
    ValueError."""
    y = column_or_1d(np.asarray(y), warn=True)
    if not len(y):
        raise ValueError("y is empty: there are no samples to draw shots from.")
    check_classification_targets(y)
    return y


@validate_params(
    {
        "y": ["array-like"],
        "n_shots": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def draw_shots(y, n_shots, random_state=None):
    """Indices of ``n_shots`` random samples of each class, and of the others.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels.
    n_shots : int
        Samples to draw per class.
    random_state : int, RandomState instance or None
        Seed of the draw.

    Returns
    -------
    shots : ndarray of int
        Sorted indices of the drawn samples (``n_shots`` per class).
    rest : ndarray of int
        Sorted indices of all other samples.

    Raises
    ------
    ValueError
        If ``y`` is empty, not class labels or 2-D with several columns, or a class has
        fewer than ``n_shots`` samples (a class with exactly ``n_shots`` gives them all as
        shots).
    """
    y = _labels(y)
    rng = check_random_state(random_state)
    classes, y_encoded = np.unique(y, return_inverse=True)
    counts = np.bincount(y_encoded)
    short = classes[counts < n_shots]
    if short.size:
        raise ValueError(
            f"n_shots={n_shots} but classes {short.tolist()!r} have fewer samples "
            f"(smallest class: {counts.min()} samples)."
        )
    shots = np.concatenate(
        [rng.permutation(np.flatnonzero(y_encoded == k))[:n_shots] for k in range(len(classes))]
    )
    shots.sort()
    rest = np.setdiff1d(np.arange(len(y)), shots)
    return shots, rest


class FewShotSplit(BaseCrossValidator):
    """Few-shot cross-validator: ``n_shots`` training samples per class, the rest to test.

    Each split draws, for every class, ``n_shots`` random samples as the training set
    (stratified and reproducible) and tests on the remaining samples. This is the
    evaluation protocol of few-shot CLIP papers (CoOp, Tip-Adapter, SeMoBridge), as a
    scikit-learn splitter: it works as ``cv=`` in :func:`~sklearn.model_selection.cross_val_score`
    and :class:`~sklearn.model_selection.GridSearchCV`.

    Parameters
    ----------
    n_shots : int, default=1
        Training samples per class in each split.
    n_splits : int, default=5
        Number of independent draws.
    test_size : float, int or None, default=None
        What each split tests on, among the samples not drawn for training:
        ``None`` takes them all; a float in (0, 1) takes that fraction of each class's
        remaining samples (at least one); an int takes at most that many per class.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws. With an int, every call of :meth:`split` yields the same splits.

    See Also
    --------
    sklearn.model_selection.StratifiedShuffleSplit : Stratified splits by proportion.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cmm.model_selection import FewShotSplit
    >>> y = np.repeat([0, 1, 2], 10)
    >>> cv = FewShotSplit(n_shots=2, n_splits=3, random_state=0)
    >>> train, test = next(cv.split(np.zeros((30, 4)), y))
    >>> np.bincount(y[train]).tolist(), len(test)
    ([2, 2, 2], 24)
    """

    _parameter_constraints = {
        "n_shots": [Interval(Integral, 1, None, closed="left")],
        "n_splits": [Interval(Integral, 1, None, closed="left")],
        "test_size": [
            Interval(Real, 0, 1, closed="neither"),
            Interval(Integral, 1, None, closed="left"),
            None,
        ],
        "random_state": ["random_state"],
    }

    def __init__(self, n_shots=1, n_splits=5, *, test_size=None, random_state=None):
        self.n_shots = n_shots
        self.n_splits = n_splits
        self.test_size = test_size
        self.random_state = random_state
        self._check_params()

    def _check_params(self):
        # At construction (as scikit-learn's splitters do) and again in split, since the
        # attributes may be set in between.
        validate_parameter_constraints(
            self._parameter_constraints,
            {name: getattr(self, name) for name in self._parameter_constraints},
            caller_name=type(self).__name__,
        )

    def split(self, X, y, groups=None):
        """Generate indices to split data into training and test set.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; only its length is used.
        y : array-like of shape (n_samples,)
            Class labels the draw is stratified on.
        groups : None
            Ignored, present for API consistency.

        Yields
        ------
        train : ndarray
            The training set indices for that split.
        test : ndarray
            The testing set indices for that split.

        Raises
        ------
        ValueError
            If a parameter is invalid, ``y`` is empty, not class labels or 2-D with
            several columns, or a class has no more than ``n_shots`` samples (nothing of
            it would be left to test on).
        """
        self._check_params()
        y = _labels(y)
        if len(y) != _num_samples(X):
            raise ValueError(f"X has {_num_samples(X)} samples but y has {len(y)}.")
        classes, counts = np.unique(y, return_counts=True)
        too_few = counts <= self.n_shots
        if too_few.any():
            raise ValueError(
                f"n_shots={self.n_shots} but classes {classes[too_few].tolist()!r} have "
                f"only {counts[too_few].tolist()!r} samples: FewShotSplit needs more than "
                "n_shots samples per class (the rest are tested on); lower n_shots or "
                "drop these classes."
            )
        rng = check_random_state(self.random_state)
        for _ in range(self.n_splits):
            train, rest = draw_shots(y, self.n_shots, rng)
            yield train, self._test_subset(y, rest, rng)

    def _test_subset(self, y, rest, rng):
        if self.test_size is None:
            return rest
        parts = []
        for label in np.unique(y[rest]):
            members = rng.permutation(rest[y[rest] == label])
            if isinstance(self.test_size, Integral):
                size = min(self.test_size, len(members))
            else:
                size = max(1, int(round(self.test_size * len(members))))
            parts.append(members[:size])
        return np.sort(np.concatenate(parts))

    def _iter_test_indices(self, X=None, y=None, groups=None):
        # ``split`` is overridden; BaseCrossValidator only needs this to exist.
        raise NotImplementedError

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits, ``n_splits``.

        Parameters
        ----------
        X, y, groups : object
            Ignored, present for API consistency.

        Returns
        -------
        n_splits : int
        """
        return self.n_splits
