"""How far apart CLIP's image and text embeddings are (the modality gap), and how well
calibrated a classifier's probabilities are."""

from numbers import Integral

import numpy as np
from sklearn.utils import check_array, check_consistent_length, column_or_1d
from sklearn.utils._param_validation import Interval, validate_params

from ._math import calibration
from ._math.basic import l2_normalize


def _normalized(features, name):
    return l2_normalize(check_array(features, dtype=[np.float64, np.float32], input_name=name))


def modality_gap(image_features, text_features):
    """Distance between the centroids of L2-normalised image and text embeddings.

    The modality gap of Liang et al. (2022): with every embedding on the unit sphere,
    ``|| mean(normalize(image_features)) - mean(normalize(text_features)) ||``. It is 0
    when the two modalities share a centroid and at most 2. Cross-Modal Mapping and
    SeMoBridge claim to shrink it: compare ``modality_gap(X, T)`` with
    ``modality_gap(clf.transform(X), T)``.

    Parameters
    ----------
    image_features : array-like of shape (n_images, dim)
        Image embeddings (normalised here).
    text_features : array-like of shape (n_texts, dim)
        Text embeddings, e.g. one prototype per class (normalised here).

    Returns
    -------
    gap : float

    See Also
    --------
    paired_alignment : Mean cosine between images and their own class's text.

    References
    ----------
    .. [1] W. Liang, Y. Zhang, Y. Kwon, S. Yeung, J. Zou, "Mind the Gap: Understanding the
       Modality Gap in Multi-modal Contrastive Representation Learning", NeurIPS 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cmm import modality_gap
    >>> modality_gap(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))  # doctest: +ELLIPSIS
    1.414...
    """
    images = _normalized(image_features, "image_features")
    texts = _normalized(text_features, "text_features")
    if images.shape[1] != texts.shape[1]:
        raise ValueError(
            f"image_features have {images.shape[1]} dims but text_features have "
            f"{texts.shape[1]}."
        )
    return float(np.linalg.norm(images.mean(axis=0) - texts.mean(axis=0)))


def paired_alignment(image_features, paired_text_features):
    """Mean cosine similarity between each image and the text it should match.

    A second view of the gap: how close images are to their own class's text prototype
    (``paired_text_features[i]`` is the prototype of image ``i``'s class, e.g.
    ``T[y]``). CLIP's raw embeddings score low (about 0.3 for ViT-B/16) even when
    zero-shot classification is right, because of the gap; a mapping into the text space
    should raise it.

    Parameters
    ----------
    image_features : array-like of shape (n_images, dim)
        Image embeddings (normalised here).
    paired_text_features : array-like of shape (n_images, dim)
        Row ``i`` is the text embedding that image ``i`` should match, e.g. its class's
        prototype ``T[y[i]]`` (normalised here).

    Returns
    -------
    alignment : float
        In [-1, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cmm.metrics import paired_alignment
    >>> X, T = np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> paired_alignment(X, T)  # doctest: +ELLIPSIS
    0.853...
    """
    images = _normalized(image_features, "image_features")
    texts = _normalized(paired_text_features, "paired_text_features")
    if images.shape != texts.shape:
        raise ValueError(
            f"image_features {images.shape} and paired_text_features {texts.shape} must "
            "have the same shape: one text row per image."
        )
    return float(np.einsum("ij,ij->i", images, texts).mean())


@validate_params(
    {
        "y_true": ["array-like"],
        "y_prob": ["array-like"],
        "labels": ["array-like", None],
        "n_bins": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def expected_calibration_error(y_true, y_prob, *, labels=None, n_bins=15):
    """Top-label expected calibration error (ECE) of class probabilities.

    The confidence of a sample is its largest probability, its prediction that class.
    Samples are grouped in ``n_bins`` equal-width confidence bins and the ECE is the
    sample-weighted mean gap between accuracy and mean confidence in the bins::

        ECE = sum_b |B_b| / n * |accuracy(B_b) - confidence(B_b)|

    0 for a perfectly calibrated classifier; the mean confidence minus the accuracy when
    every confidence falls in one bin. With few samples per bin it is biased upward; use
    it beside :func:`sklearn.metrics.log_loss`, which is a proper score.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_prob : array-like of shape (n_samples, n_classes)
        Predicted probabilities, e.g. ``clf.predict_proba(X)``; column ``j`` is the class
        ``labels[j]``.
    labels : array-like of shape (n_classes,) or None, default=None
        The class of each column of ``y_prob`` (``clf.classes_``); None: the sorted
        labels of ``y_true``, which must then have as many as ``y_prob`` has columns.
    n_bins : int, default=15
        Number of confidence bins on [0, 1].

    Returns
    -------
    ece : float
        In [0, 1].

    References
    ----------
    .. [1] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern Neural
       Networks", ICML 2017.

    Examples
    --------
    >>> from sklearn_cmm.metrics import expected_calibration_error
    >>> round(expected_calibration_error(["a", "b"], [[0.9, 0.1], [0.7, 0.3]]), 6)
    0.4
    """
    y_true = column_or_1d(y_true)
    y_prob = check_array(y_prob, dtype=np.float64, input_name="y_prob")
    check_consistent_length(y_true, y_prob)
    labels = np.unique(y_true) if labels is None else column_or_1d(labels)
    if len(labels) != y_prob.shape[1]:
        raise ValueError(
            f"y_prob has {y_prob.shape[1]} columns but there are {len(labels)} labels; "
            "pass labels=clf.classes_."
        )
    order = np.argsort(labels)
    positions = np.searchsorted(labels[order], y_true)
    positions = np.minimum(positions, len(labels) - 1)
    if not np.array_equal(labels[order][positions], y_true):
        raise ValueError("y_true has labels that are not in labels.")
    return calibration.expected_calibration_error(order[positions], y_prob, n_bins=n_bins)
