"""How far apart CLIP's image and text embeddings are (the modality gap)."""

import numpy as np
from sklearn.utils import check_array

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
    >>> modality_gap(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
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
    paired_text_features : array-like of shape (n_images, dim)

    Returns
    -------
    alignment : float
        In [-1, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cmm.metrics import paired_alignment
    >>> paired_alignment(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0, 1.0], [0.0, 1.0]]))
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
