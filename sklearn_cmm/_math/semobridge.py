"""SeMoBridge (Timmermann et al., 2025): bridge, scores, blend, SeMoBridge-T schedule.

numpy and scipy; SeMoBridge-T's torch loss is in :mod:`.semobridge_loss`.

Notation of ``shared/methods/semobridge.md``: ``f`` a raw image embedding (dim D), ``W`` CLIP's
``text_projection`` (width x D), ``W_pinv`` its pseudo-inverse (D x width), ``T`` the unit
class text prototypes, ``F_hat`` / ``F_bar`` the bridged / raw few-shot class prototypes.

The scale ``s`` of the pseudo end-of-text token (mean norm of the pre-projection class text
features) is left out everywhere: ``e = s * normalize(...)`` and ``f_hat = e @ W`` are only
ever normalised (directly or through a class mean, which ``s`` scales as a whole), so ``s``
cancels from every score, prototype and loss.
"""

import numpy as np
from scipy import linalg
from scipy.special import softmax

from .basic import class_means, l2_normalize, loo_prototype_cosine


def pinv_with_cutoff(W, cutoff):
    """Pseudo-inverse of ``W``, singular values not above ``cutoff`` treated as zero.

    SeMoBridge's only regularisation: an absolute cut-off (0.3 in the paper), not the
    relative ``rcond`` of :func:`numpy.linalg.pinv`.

    Computed from the eigendecomposition ``W^T W = V diag(s^2) V^T`` as
    ``V_k diag(1 / s_k^2) V_k^T W^T`` (equal to ``V_k diag(1 / s_k) U_k^T``), about 2x
    faster than an SVD at CLIP's sizes. Squaring costs relative precision
    ``eps * (s_max / s_k)^2`` on a kept direction, negligible unless the cut-off is far
    below the largest singular value; there (cut-off below ``1e-4 * s_max``, e.g. 0) the
    SVD is used.

    Parameters
    ----------
    W : ndarray of shape (width, dim)
        The text projection.
    cutoff : float
        Absolute threshold on the singular values.

    Returns
    -------
    W_pinv : ndarray of shape (dim, width)
        ``V_k diag(1 / s_k) U_k^T`` over the singular triplets with ``s_k > cutoff``
        (zeros if there is none).
    """
    W = np.asarray(W, dtype=np.float64)
    squares, V = linalg.eigh(W.T @ W, driver="evd", check_finite=False)
    if cutoff**2 >= 1e-8 * squares[-1]:
        keep = squares > cutoff**2
        return (V[:, keep] / squares[keep]) @ (W @ V[:, keep]).T
    U, s, Vt = linalg.svd(W, full_matrices=False, check_finite=False)
    keep = s > cutoff
    return (Vt[keep].T / s[keep]) @ U[:, keep].T


def relative_cutoff(W, fraction):
    """An absolute cut-off at ``fraction`` of the largest singular value of ``W``.

    Parameters
    ----------
    W : ndarray of shape (width, dim)
        The text projection.
    fraction : float
        Fraction of the largest singular value.

    Returns
    -------
    cutoff : float
        ``fraction * s_max(W)``, for :func:`pinv_with_cutoff`.
    """
    return float(fraction * np.linalg.norm(np.asarray(W, dtype=np.float64), 2))


def pseudo_tokens(f, W_pinv, bias=None):
    """The pseudo end-of-text tokens ``e = normalize(f @ W_pinv + bias)``.

    Up to the scale ``s``, which cancels in every use; :func:`bridge` projects them with
    ``W`` into the text modality.

    Parameters
    ----------
    f : ndarray of shape (n_samples, dim)
        Raw (not normalised) image embeddings.
    W_pinv : ndarray of shape (dim, width)
        (Cut-off or trained) pseudo-inverse of ``W``.
    bias : ndarray of shape (n_samples, width) or (width,), default=None
        Bias added before the normalisation (SeMoBridge-T's class bias of each sample's
        class); None (the closed form, and every query at test time) adds nothing.

    Returns
    -------
    tokens : ndarray of shape (n_samples, width)
        Unit rows, in the precision of ``f``.
    """
    # float32 features get a float32 product: twice as fast (the bulk of SeMoBridge's
    # closed-form fit), and as precise as the features themselves.
    tokens = f @ np.asarray(W_pinv).astype(f.dtype, copy=False)
    if bias is not None:
        tokens = tokens + bias
    return l2_normalize(tokens)


def bridge(f, W_pinv, W, bias=None):
    """The bridged embedding ``f_hat = normalize(f @ W_pinv + bias) @ W``.

    Parameters
    ----------
    f, W_pinv, bias
        As in :func:`pseudo_tokens`.
    W : ndarray of shape (width, dim)
        The text projection.

    Returns
    -------
    f_hat : ndarray of shape (n_samples, dim)
        Bridged embeddings, not normalised.
    """
    return pseudo_tokens(f, W_pinv, bias) @ W


def bridge_prototypes(f, tokens, W, y_encoded, n_classes):
    """The bridged and the raw few-shot class prototypes.

    Parameters
    ----------
    f : ndarray of shape (n_samples, dim)
        Raw few-shot image embeddings (not normalised before the mean).
    tokens : ndarray of shape (n_samples, width)
        Their pseudo tokens (:func:`pseudo_tokens`), so that ``f_hat = tokens @ W``.
    W : ndarray of shape (width, dim)
        The text projection.
    y_encoded : ndarray of shape (n_samples,)
        Class indices in ``0 .. n_classes - 1``.
    n_classes : int
        Number of classes.

    Returns
    -------
    F_hat : ndarray of shape (n_classes, dim)
        ``normalize(mean_k f_hat_{c,k})``, computed as ``normalize((mean_k e_{c,k}) @ W)``
        (the projection is linear): a (classes x width) product instead of a
        (shots x width) one.
    F_bar : ndarray of shape (n_classes, dim)
        ``normalize(mean_k f_{c,k})``.
    """
    return (
        l2_normalize(class_means(tokens, y_encoded, n_classes) @ W),
        l2_normalize(class_means(f, y_encoded, n_classes)),
    )


def class_weights(F_bar, T, smoothness):
    """SeMoBridge's per-class weights, larger where image prototypes miss their own text.

    ``p_c = softmax_j(F_bar_c . T_j)`` (no temperature),
    ``D_c = log2((1 + 1e-6) / (p_cc + 1e-6))``, ``w_c = exp(smoothness * D_c)``.

    Parameters
    ----------
    F_bar : ndarray of shape (n_classes, dim)
        Unit raw image class prototypes.
    T : ndarray of shape (n_classes, dim)
        Unit class text prototypes, in the same class order.
    smoothness : float
        Strength of the weighting; 0 gives every class weight 1.

    Returns
    -------
    w : ndarray of shape (n_classes,)
        The weight ``w_c`` of each class.
    """
    p_own = np.diag(softmax(F_bar @ T.T, axis=1))
    divergence = np.log2((1 + 1e-6) / (p_own + 1e-6))
    return np.exp(smoothness * divergence)


def score_matrices(f, f_hat, T, F_hat, F_bar):
    """The three cosine score matrices of SeMoBridge for queries ``f``.

    Parameters
    ----------
    f : ndarray of shape (n_queries, dim)
        Raw query embeddings.
    f_hat : ndarray of shape (n_queries, dim)
        The queries bridged without bias (:func:`bridge`).
    T, F_hat, F_bar : ndarray of shape (n_classes, dim)
        Unit text, bridged few-shot and raw few-shot class prototypes.

    Returns
    -------
    z1 : ndarray of shape (n_queries, n_classes)
        ``normalize(f) . T_c``, the zero-shot score.
    z2 : ndarray of shape (n_queries, n_classes)
        ``normalize(f) . F_hat_c``.
    z3 : ndarray of shape (n_queries, n_classes)
        ``normalize(f_hat) . F_bar_c``.
    """
    queries = l2_normalize(f)
    return queries @ T.T, queries @ F_hat.T, l2_normalize(f_hat) @ F_bar.T


def loo_score_matrices(f, f_hat, f_hat_shots, y_encoded, n_classes, T=None):
    """:func:`score_matrices` of the few-shot images, each left out of its own prototypes.

    For cross-validating the blend weights on the training shots: shot ``i``'s score for
    its own class uses prototypes built without shot ``i`` (see
    :func:`~sklearn_cmm._math.basic.loo_prototype_cosine`; a class left empty scores 0).

    Parameters
    ----------
    f : ndarray of shape (n_samples, dim)
        Raw few-shot embeddings.
    f_hat : ndarray of shape (n_samples, dim)
        Them bridged without bias, as queries are.
    f_hat_shots : ndarray of shape (n_samples, dim)
        Them bridged as for the prototypes (with SeMoBridge-T's class bias, if any).
    y_encoded : ndarray of shape (n_samples,)
        Class index of each shot.
    n_classes : int
        Number of classes.
    T : ndarray of shape (n_classes, dim) or None, default=None
        Unit text prototypes; None when the zero-shot prototypes are the image class means
        ``normalize(mean normalize(f))``, which are then left out the same way.

    Returns
    -------
    z1, z2, z3 : ndarray of shape (n_samples, n_classes)
        The score matrices of :func:`score_matrices`, leave-one-out.
    """
    queries = l2_normalize(f)
    if T is None:
        z1 = loo_prototype_cosine(queries, queries, y_encoded, n_classes)
    else:
        z1 = queries @ T.T
    z2 = loo_prototype_cosine(queries, f_hat_shots, y_encoded, n_classes)
    z3 = loo_prototype_cosine(l2_normalize(f_hat), f, y_encoded, n_classes)
    return z1, z2, z3


def semobridge_logits(z1, z2, z3, w, alpha, beta, gamma, lambda1, lambda2, lambda3):
    """SeMoBridge's final logits from its three score matrices.

    ``lambda1 exp(-alpha (1 - z1)) + lambda2 w_c exp(-beta (1 - z2))
    + lambda3 w_c exp(-gamma (1 - z3))``.

    Parameters
    ----------
    z1, z2, z3 : ndarray of shape (n_queries, n_classes)
        Score matrices (:func:`score_matrices`).
    w : ndarray of shape (n_classes,)
        Class weights (:func:`class_weights`).
    alpha, beta, gamma : float
        Sharpness of each score's kernel.
    lambda1, lambda2, lambda3 : float
        Weight of each term.

    Returns
    -------
    logits : ndarray of shape (n_queries, n_classes)
        The blended class scores.
    """
    return lambda1 * np.exp(-alpha * (1.0 - z1)) + w * (
        lambda2 * np.exp(-beta * (1.0 - z2)) + lambda3 * np.exp(-gamma * (1.0 - z3))
    )


def warmup_learning_rate(step, learning_rate, warmup_iter, start_lr):
    """Learning rate of SeMoBridge-T at ``step`` (0-based): Dassl's linear warm-up.

    The authors' schedule (Dassl's ``LinearWarmupScheduler``, then constant):
    ``start_lr`` at step 0, ``learning_rate * step / warmup_iter`` for
    ``0 < step < warmup_iter``, ``learning_rate`` from ``warmup_iter`` on. (Not a line
    from ``start_lr``: step 1 is ``learning_rate / warmup_iter``.)

    Parameters
    ----------
    step : int
        Index of the optimisation step, from 0.
    learning_rate : float
        Rate after the warm-up.
    warmup_iter : int
        Length of the warm-up; 0 for none.
    start_lr : float
        Rate of step 0 during a warm-up.

    Returns
    -------
    lr : float
    """
    if step >= warmup_iter:
        return learning_rate
    if step == 0:
        return start_lr
    return learning_rate * step / warmup_iter


def validation_folds(y_encoded, n_classes, rng, n_folds=2):
    """Folds of the shots for a trained method's validation, balanced in every class.

    Each class's shots are shuffled and dealt in turn to folds 0, 1, ..., ``n_folds - 1``
    (with two folds, a class with an odd count gives fold 0 the extra shot; a class with
    fewer shots than folds is in the first folds only). A class with a single shot is in
    none (-1): it is trained on in every fold and never validated.

    Parameters
    ----------
    y_encoded : ndarray of shape (n_samples,)
        Class of each shot.
    n_classes : int
        Number of classes.
    rng : numpy.random.RandomState
        Source of the shuffles.
    n_folds : int, default=2
        Number of folds (SeMoBridge-T's two; Tip-Adapter-F's four).

    Returns
    -------
    fold : ndarray of shape (n_samples,)
        The fold of each shot (0 to ``n_folds - 1``), or -1.
    """
    fold = np.full(len(y_encoded), -1)
    for c in range(n_classes):
        members = np.flatnonzero(y_encoded == c)
        if len(members) >= 2:
            fold[rng.permutation(members)] = np.arange(len(members)) % n_folds
    return fold
