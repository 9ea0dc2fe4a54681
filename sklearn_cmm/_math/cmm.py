"""Cross-Modal Mapping (Yang et al., 2024): the closed-form map and the fused logits.

numpy, float64: the fit without refinement and every prediction. The
refinement's torch losses are in :mod:`.cmm_loss`.
"""

import numpy as np

from .basic import class_sums, l2_normalize


def solves_with_gram(n_samples, dim):
    """Whether :func:`ridge_map_to_prototypes` solves the ``dim x dim`` system of ``V^T V``
    (at least as many rows as dimensions), not the ``n_samples x n_samples`` one."""
    return n_samples >= dim


def ridge_map_to_prototypes(V, y_encoded, prototypes, ridge, gram=None):
    """Linear map taking each row of ``V`` toward its class prototype, shrunk toward the identity.

    Solves ``argmin_W ||V W - P_y||_F^2 + ridge * ||W - I||_F^2``, where row ``i`` of
    ``P_y`` is ``prototypes[y_encoded[i]]``. The solution is
    ``(V^T V + ridge I)^-1 (V^T P_y + ridge I)``, or equally (the push-through identity)
    ``I + V^T (V V^T + ridge I)^-1 (P_y - V)``: a symmetric positive definite system of
    ``dim`` or of ``n_samples`` unknowns per column. The smaller one is solved: with fewer
    shots than dimensions (10 x 1 shot, 512-d: 0.26 ms instead of 24 ms on one core) the
    second. Directions that ``V`` does not span are left unchanged (``W`` acts as the
    identity there), so the map is well defined with fewer samples than dimensions.

    The system is solved by :func:`numpy.linalg.solve`, on the OpenBLAS that computes the
    products, not by scipy's own copy: each library's idle threads spin for a while
    after a call, so on 2 cores a scipy solve right after numpy's Gram took twice as
    long (1024-d: 0.10-0.14 against 0.055 s), and the next Gram 20% longer.

    Parameters
    ----------
    V : ndarray of shape (n_samples, dim)
        Image features (in CMM, L2-normalised).
    y_encoded : ndarray of shape (n_samples,)
        Class index of each row, in ``0 .. n_classes - 1``.
    prototypes : ndarray of shape (n_classes, dim)
        What the rows of each class should map to (in CMM, the class text prototypes).
    ridge : float
        Strength of the pull toward the identity; must be positive.
    gram : ndarray of shape (dim, dim), default=None
        ``V.T @ V`` when the caller has it (CMM's cross-fit: the whole fit's Gram less the
        held-out rows'); used where :func:`solves_with_gram`, computed when None.

    Returns
    -------
    W : ndarray of shape (dim, dim)
        The map, applied as ``V @ W``.
    """
    V = np.asarray(V, dtype=np.float64)
    prototypes = np.asarray(prototypes, dtype=np.float64)
    n_samples, dim = V.shape
    if not solves_with_gram(n_samples, dim):
        gram = V @ V.T
        gram.flat[:: n_samples + 1] += ridge
        W = V.T @ np.linalg.solve(gram, prototypes[y_encoded] - V)
        W.flat[:: dim + 1] += 1.0
        return W
    if gram is None:
        gram = V.T @ V
    eye = np.eye(dim)
    # V^T P_y = S^T P with S the class sums of V: (n_classes x dim) instead of
    # (n_samples x dim) products, half the cost of the closed form at ImageNet scale.
    cross = class_sums(V, y_encoded, len(prototypes)).T @ prototypes
    return np.linalg.solve(gram + ridge * eye, cross + ridge * eye)


def map_to_text(X, W):
    """Image features mapped into the text space: ``normalize(normalize(X) @ W)``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, dim)
        Image features (normalised here).
    W : ndarray of shape (dim, dim)
        The map.

    Returns
    -------
    mapped : ndarray of shape (n_samples, dim)
        Unit rows (a row mapped to zero stays zero).
    """
    return l2_normalize(l2_normalize(X) @ W)


def cmm_logits(X, W, prototypes, zero_shot_prototypes, logit_scale, zero_shot_weight):
    """CMM's logits fused with zero-shot CLIP's.

    ``logit_scale * cos(normalize(X) @ W, T) + zero_shot_weight * logit_scale * cos(X, T0)``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, dim)
        Image features (normalised here).
    W : ndarray of shape (dim, dim)
        The image-to-text map.
    prototypes : ndarray of shape (n_classes, dim)
        Text prototypes ``T`` the mapped images are compared with (normalised here).
    zero_shot_prototypes : ndarray of shape (n_classes, dim)
        Frozen prototypes ``T0`` of the zero-shot term (normalised here).
    logit_scale : float
        Temperature of both cosine terms.
    zero_shot_weight : float
        Weight of the zero-shot term.

    Returns
    -------
    logits : ndarray of shape (n_samples, n_classes)
    """
    Xn = l2_normalize(X)
    logits = logit_scale * l2_normalize(Xn @ W) @ l2_normalize(prototypes).T
    if zero_shot_weight:
        logits += (zero_shot_weight * logit_scale) * Xn @ l2_normalize(zero_shot_prototypes).T
    return logits
