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
    relative ``rcond`` of :func:`numpy.linalg.pinv`. Whatever the cut-off (also 0),
    singular values at the level of rounding (numpy's default ``rcond``: ``max(width,
    dim) * eps`` of the largest) are zero too: those of a rank-deficient ``W`` are noise,
    and their inverses would be ``1e15`` and more.

    Computed from the eigendecomposition ``W^T W = V diag(s^2) V^T`` as
    ``V_k diag(1 / s_k^2) V_k^T W^T`` (equal to ``V_k diag(1 / s_k) U_k^T``), about 2x
    faster than an SVD at CLIP's sizes. Squaring costs relative precision
    ``eps * (s_max / s_k)^2`` on a kept direction, negligible unless the cut-off is far
    below the largest singular value; there (cut-off below ``1e-4 * s_max``, e.g. 0) the
    SVD is used. Both by numpy, whose OpenBLAS also computes the fit's products (see
    :func:`.cmm.ridge_map_to_prototypes`: scipy's copy waits on its spinning threads).

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
    squares, V = np.linalg.eigh(W.T @ W)
    if cutoff**2 >= 1e-8 * squares[-1]:
        keep = squares > cutoff**2
        return (V[:, keep] / squares[keep]) @ (W @ V[:, keep]).T
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    keep = s > max(cutoff, max(W.shape) * np.finfo(np.float64).eps * s[0])
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


def text_preimage(T, W):
    """``T @ pinv(W)``: the least-squares preimage of each row of ``T`` under ``W``.

    The minimum-norm solution ``X`` of ``min ||X W - T||``, by LAPACK's complete
    orthogonal factorisation (``gelsy``) rather than the SVD that
    :func:`numpy.linalg.pinv` takes: equal to rounding (relative 1e-14 on synthetic
    projections of 64-1024 d) and 3-6x faster (one core: 15 against 93 ms at 512 x 512,
    0.2 against 0.58 s at 1024 x 1024), a fixed cost of every SeMoBridge-T fit given a
    projection without pre-projection text.

    Parameters
    ----------
    T : ndarray of shape (n_rows, dim)
        What ``W`` should map to.
    W : ndarray of shape (width, dim)
        The text projection.

    Returns
    -------
    X : ndarray of shape (n_rows, width)
    """
    return linalg.lstsq(np.asarray(W, dtype=np.float64).T,
                        np.asarray(T, dtype=np.float64).T, lapack_driver="gelsy")[0].T


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


def class_divergence(F_bar, T):
    """How far each class's image prototype misses its own text: SeMoBridge's ``D_c``.

    ``p_c = softmax_j(F_bar_c . T_j)`` (no temperature),
    ``D_c = log2((1 + 1e-6) / (p_cc + 1e-6))``.

    Parameters
    ----------
    F_bar : ndarray of shape (n_classes, dim)
        Unit raw image class prototypes.
    T : ndarray of shape (n_classes, dim)
        Unit class text prototypes, in the same class order.

    Returns
    -------
    D : ndarray of shape (n_classes,)
    """
    p_own = np.diag(softmax(F_bar @ T.T, axis=1))
    return np.log2((1 + 1e-6) / (p_own + 1e-6))


def class_weights(F_bar, T, smoothness):
    """SeMoBridge's per-class weights, larger where image prototypes miss their own text.

    ``w_c = exp(smoothness * D_c)``, ``D_c`` the :func:`class_divergence`.

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
    return np.exp(smoothness * class_divergence(F_bar, T))


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


def loo_score_matrices(f, f_hat, f_hat_shots, y_encoded, n_classes, T=None, query_index=None,
                       shots_projection=None, n_views=1, empty_class="zero", every_class=False):
    """:func:`score_matrices` of the few-shot images, each left out of its own prototypes.

    For cross-validating the blend weights on the training shots: shot ``i``'s score for
    its own class uses prototypes built without shot ``i`` (see
    :func:`~sklearn_cmm._math.basic.loo_prototype_cosine`; a class left empty scores
    ``empty_class``).

    Parameters
    ----------
    f : ndarray of shape (n_samples, dim)
        Raw few-shot embeddings.
    f_hat : ndarray of shape (n_queries, dim)
        The scored shots bridged without bias, as queries are (all shots when
        ``query_index`` is None).
    f_hat_shots : ndarray of shape (n_samples, dim)
        The shots bridged as for the prototypes (with SeMoBridge-T's class bias, if any);
        their pseudo tokens (shape ``(n_samples, width)``) with ``shots_projection``.
    y_encoded : ndarray of shape (n_samples,)
        Class index of each shot.
    n_classes : int
        Number of classes.
    T : ndarray of shape (n_classes, dim) or None, default=None
        Unit text prototypes; None when the zero-shot prototypes are the image class means
        ``normalize(mean normalize(f))``, which are then left out the same way.
    query_index : ndarray of int of shape (n_queries,) or None, default=None
        The shots scored, each left out of its own prototypes; None scores them all. The
        cost is ``3 n_queries x n_classes x dim`` plus one pass over the shots.
    shots_projection : ndarray of shape (width, dim) or None, default=None
        The text projection ``W`` when ``f_hat_shots`` are pseudo tokens: the bridged shots
        are ``f_hat_shots @ W``, of which only the class sums and the scored shots are
        computed.
    n_views : int, default=1
        Rows per image (:func:`~sklearn_cmm._math.basic.view_rows`): the queries are
        images (``query_index`` numbers them; their own view is scored), each left out
        of the prototypes with all its views.
    empty_class : {"zero", "mean"}, default="zero"
        The score of a class left without shots (see
        :func:`~sklearn_cmm._math.basic.loo_prototype_cosine`).
    every_class : bool, default=False
        Leave a shot out of every class's prototypes, not only the query's own (see
        :func:`~sklearn_cmm._math.basic.loo_prototype_cosine`).

    Returns
    -------
    z1, z2, z3 : ndarray of shape (n_queries, n_classes)
        The score matrices of :func:`score_matrices`, leave-one-out.
    """
    n_images = len(y_encoded) // n_views
    index = np.arange(n_images) if query_index is None else np.asarray(query_index)
    queries = l2_normalize(f[index * n_views])
    left_out = dict(n_views=n_views, empty_class=empty_class, every_class=every_class)
    if T is None:
        z1 = loo_prototype_cosine(queries, l2_normalize(f), y_encoded, n_classes, index,
                                  **left_out)
    else:
        z1 = queries @ T.T
    z2 = loo_prototype_cosine(queries, f_hat_shots, y_encoded, n_classes, index, shots_projection,
                              **left_out)
    z3 = loo_prototype_cosine(l2_normalize(f_hat), f, y_encoded, n_classes, index, **left_out)
    return z1, z2, z3


def blend_contenders(z1, z2, z3, divergence, *, max_rounds=16, block=128):
    """The classes that can be a query's argmax for some blend of :func:`semobridge_logits`.

    Every term of the blend is non-decreasing in the class's ``z1``, ``z2``, ``z3`` and
    ``D_c`` (``w_c = exp(smoothness D_c)``) for non-negative parameters. So class ``c``
    never wins against a class ``p`` with all four values at least ``c``'s and a lower
    index (``p`` wins ties), nor against one with all four strictly larger (``p``'s logit
    is then larger for every blend whose logits are not all equal, see
    :func:`blend_accuracies`). Such classes are dropped: for each query, rounds pick the
    remaining class of largest ``z1 + z2 + z3 + D_c`` not yet picked (a class no
    remaining one dominates) and drop every class it dominates. After ``max_rounds``
    rounds, or when every remaining class was picked (then the rest is exactly the
    classes no class dominates in this sense), the rest is returned: a superset of the
    possible winners, some 15 of 1000 classes for CLIP-like scores.

    Parameters
    ----------
    z1, z2, z3 : ndarray of shape (n_queries, n_classes)
        Score matrices (:func:`score_matrices`).
    divergence : ndarray of shape (n_classes,)
        ``D_c`` (:func:`class_divergence`).
    max_rounds : int, default=16
        Most rounds; each costs a few comparisons of the ``(n_queries, n_classes)`` scores.
    block : int, default=128
        Queries processed together.

    Returns
    -------
    contenders : ndarray of bool of shape (n_queries, n_classes)
    """
    n_queries, n_classes = z1.shape
    contenders = np.ones((n_queries, n_classes), dtype=bool)
    index = np.arange(n_classes)
    for start in range(0, n_queries, block):
        scores = [z[start : start + block] for z in (z1, z2, z3)]
        alive = contenders[start : start + block]  # a view: updated in place
        rows = np.arange(len(alive))
        total = scores[0] + scores[1] + scores[2] + divergence
        unpicked = np.ones_like(alive)
        for _ in range(max_rounds):
            open_ = alive & unpicked
            if not open_.any():
                break
            picked = np.argmax(np.where(open_, total, -np.inf), axis=1)
            unpicked[rows, picked] = False
            at_most = divergence <= divergence[picked][:, None]
            below = divergence < divergence[picked][:, None]
            for z in scores:
                top = z[rows, picked][:, None]
                at_most &= z <= top
                below &= z < top
            # A row with nothing open picked a dominated class: dropping what that one
            # dominates is still right (domination is transitive).
            alive &= ~(below | (at_most & (index > picked[:, None])))
    return contenders


def blend_accuracies(held_out, candidates, *, max_rounds=16):
    """Accuracy of each blend of :func:`semobridge_logits` on held-out score matrices.

    The argmax of each query is taken over its :func:`blend_contenders` only (found once
    for all candidates), which gives the full argmax, first class among equals included:
    a trial costs three exponentials of the contenders' scores (some 15 a query among
    1000 classes) instead of three of the full ``(n_queries, n_classes)`` matrices. A
    blend whose logits are equal for every class (each term has a zero weight, or a zero
    sharpness with ``smoothness=0`` for the image terms) predicts the first class, as the
    full argmax does.

    Parameters
    ----------
    held_out : list of tuple
        ``(z1, z2, z3, divergence, y)`` per group of queries sharing prototypes (a
        validation fold, or the leave-one-out shots): score matrices of shape
        ``(n_queries, n_classes)``, the ``D_c`` of :func:`class_divergence` and the
        queries' classes.
    candidates : list of dict
        Values of ``smoothness``, ``alpha``, ``beta``, ``gamma``, ``lambda1``, ``lambda2``,
        ``lambda3``.
    max_rounds : int, default=16
        Passed to :func:`blend_contenders`.

    Returns
    -------
    accuracies : ndarray of shape (n_candidates,)
        Over all queries of ``held_out`` pooled.
    """
    correct = np.zeros(len(candidates))
    for z1, z2, z3, divergence, y in held_out:
        if not len(y):
            continue
        # Contenders of all queries in one flat array, query by query, in class order.
        rows, classes = np.nonzero(blend_contenders(z1, z2, z3, divergence,
                                                    max_rounds=max_rounds))
        counts = np.bincount(rows, minlength=len(y))  # >= 1: the best class is never dropped
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        scores = [z[rows, classes] for z in (z1, z2, z3)]
        first_class = np.count_nonzero(y == 0)
        for i, candidate in enumerate(candidates):
            if _constant_blend(candidate):
                correct[i] += first_class
                continue
            weights = {k: v for k, v in candidate.items() if k != "smoothness"}
            w = np.exp(candidate["smoothness"] * divergence)
            logits = semobridge_logits(*scores, w[classes], **weights)
            # Each query's first maximum (np.argmax's choice, a NaN counting as one).
            top = np.repeat(np.maximum.reduceat(logits, starts), counts)
            peaks = np.flatnonzero((logits == top) | np.isnan(logits))
            first = peaks[np.searchsorted(peaks, starts)]
            correct[i] += np.count_nonzero(classes[first] == y)
    return correct / sum(len(part[4]) for part in held_out)


def _constant_blend(candidate):
    """Whether every class gets the same :func:`semobridge_logits` under ``candidate``."""
    image_sharp = candidate["smoothness"] > 0
    return not (
        (candidate["lambda1"] > 0 and candidate["alpha"] > 0)
        or (candidate["lambda2"] > 0 and (candidate["beta"] > 0 or image_sharp))
        or (candidate["lambda3"] > 0 and (candidate["gamma"] > 0 or image_sharp))
    )


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
