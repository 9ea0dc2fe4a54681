"""SeMoBridge-T's training loss and its gradient by hand, on numpy arrays or torch tensors.

The loss is a few small products of the shots with the bridge and a handful of
cross-entropies over classes. At the sizes of most few-shot problems (a few hundred
shots, dimension 64-512) the cost of a step is the number of array operations, not their
arithmetic: autograd's op-by-op bookkeeping is left out (the gradient is written out),
what does not change between steps is computed once, and the four cross-entropies are
one: their scores share the classes as rows and sit side by side in one matrix, so one
log-softmax, one residual and one product with the shots serve all four.

The same code runs on numpy arrays (the CPU: an operation costs about a microsecond
where torch's dispatch costs two to five) and on torch tensors (a GPU); it uses only
operators and functions that both spell alike, and :mod:`.unit_rows` for the rest.
"""

import numpy as np

from .basic import l2_normalize
from .unit_rows import take_rows, unit_rows, unit_rows_grad

#: Floor of the log-probabilities in the gradient: ``exp(-80)`` = 1.8e-35 is a normal
#: float32 (the smallest is 1.2e-38) and far below anything it is added to. Exact ones
#: would be subnormal floats, which x86 CPUs compute about a hundred times slower, and
#: which made whole steps 2.7x slower (100 classes x 1 shot x 512-d).
MIN_LOG_PROBA = -80.0


def log_softmax_and_residual(scores, targets, column_weights):
    """Log-softmax of each column of ``scores`` and its cross-entropies' gradient.

    Parameters
    ----------
    scores : array of shape (n_classes, n_columns)
        Logits, a column for each cross-entropy row (overwritten on numpy arrays).
    targets : array of shape (n_classes, n_columns)
        One-hot targets of the columns, times ``column_weights``.
    column_weights : array of shape (n_columns,)
        Weight of each column in the loss.

    Returns
    -------
    log_p : array of shape (n_classes, n_columns)
        ``log_softmax(scores, axis=0)``.
    residual : array of shape (n_classes, n_columns)
        ``(softmax - onehot) * column_weights``: the gradient of
        ``-sum(targets * log_p)`` with respect to ``scores``, each probability at least
        ``exp(MIN_LOG_PROBA)``.
    """
    if isinstance(scores, np.ndarray):  # ufunc methods: a third of np.amax's overhead
        scores -= scores.max(axis=0)
        scores -= np.log(np.add.reduce(np.exp(scores), axis=0))
        residual = np.exp(np.maximum(scores, MIN_LOG_PROBA))
        log_p = scores
    else:
        log_p = scores.log_softmax(dim=0)
        residual = log_p.clamp_min(MIN_LOG_PROBA).exp_()
    residual *= column_weights
    residual -= targets
    return log_p, residual


class SeMoBridgeTLoss:
    """SeMoBridge-T's training loss on fixed shots, and its gradient by hand.

    With ``e_i = normalize(f_i @ W_pinv + b_{y_i})``, ``f_hat_i = e_i @ W`` and the class
    prototypes ``F_hat_c = normalize(mean_{y_i = c} f_hat_i)``, ``E_c = normalize(mean e_i)``,
    every term a mean cross-entropy without label smoothing:

    - ``img``: logits ``image_logit_scale * cos(f_i, F_hat_c)``, target ``y_i``;
    - ``txtp``: logits ``cos(F_hat_c, T_j)``, target ``c``;
    - ``txte``: logits ``cos(E_c, text_pre_j)``, target ``c``;
    - ``consistency``: logits ``cos(f_hat_i, F_hat_c)``, target ``y_i``;
    - ``bias_norm``: the (population) variance of ``||b_c||`` over classes, 0 without bias;

    ``total = image_weight img + text_weight (txtp + txte) / 2
    + consistency_weight consistency + bias_norm_weight bias_norm``.

    The trained parameters are one array ``P``: ``W_pinv`` stacked on the bias (``[W_pinv;
    B]``, shape ``(dim + n_classes, width)``), or ``W_pinv`` alone without class bias, so
    that one AdamW update serves both and its gradient is one product,
    ``[f, onehot(y)]^T d_tokens``. The bias of each shot is gathered (``B[y]``), and so
    are the classes' rows where a class mean is transposed in the gradient: as products
    with one-hot matrices they cost ``n_classes`` times more, 15% of a step's
    multiply-adds at ImageNet scale. The class sums stay products: the scatter-adds that
    would replace them are not deterministic on CUDA.

    Parameters
    ----------
    f : ndarray of shape (n_samples, dim)
        Raw few-shot image embeddings.
    y : ndarray of shape (n_samples,), int
        Their class indices; every class in ``0 .. n_classes - 1`` must occur.
    W : ndarray of shape (width, dim)
        The frozen text projection.
    T : ndarray of shape (n_classes, dim)
        Class text prototypes (normalised here).
    text_pre : ndarray of shape (n_classes, width)
        Class text features before the projection (normalised here).
    backend : object
        Where the loss computes: ``backend.xp`` is ``numpy`` or ``torch``,
        ``backend.asarray`` turns a numpy array into one of its arrays (dtype, device) and
        ``backend.asindices`` an integer array into one that indexes them, as
        :class:`sklearn_cmm._torch.ArrayBackend`.
    class_bias : bool
        Whether ``P`` holds a class bias below ``W_pinv``.
    image_weight, text_weight, consistency_weight, bias_norm_weight : float
        Weights of the terms.
    image_logit_scale : float, default=100.0
        Temperature of the ``img`` term (CLIP's logit scale).
    """

    def __init__(self, f, y, W, T, text_pre, *, backend, class_bias, image_weight=0.5,
                 text_weight=0.5, consistency_weight=0.1, bias_norm_weight=0.1,
                 image_logit_scale=100.0):
        n, dim = f.shape
        n_classes = len(T)
        onehot = np.eye(n_classes)[y]
        counts = onehot.sum(axis=0)[:, None]
        self.n, self.dim, self.n_classes = n, dim, n_classes
        self.class_bias = class_bias
        # F_hat's class means as (class means of e) @ W where the width is below the number
        # of shots: at ImageNet scale (16,000 shots, width 1024) a sixteenth of the work
        self.project_means = W.shape[0] < n
        self.bias_norm_weight = float(bias_norm_weight)
        # The scores, side by side as columns of one (n_classes, 2n + 2 n_classes) matrix:
        # [img: class c, shot i | consistency: c, i | txtp: text j, class c | txte: j, c];
        # each column is one cross-entropy row, normalised over the classes.
        weights = np.concatenate([
            np.full(n, image_weight / n), np.full(n, consistency_weight / n),
            np.full(2 * n_classes, text_weight / 2 / n_classes)])
        targets = np.hstack([onehot.T, onehot.T, np.eye(n_classes), np.eye(n_classes)])
        # The img and consistency scores are one product of F_hat with the shots stacked
        # as columns: the scaled unit shots (fixed) beside the unit bridged shots (copied
        # in each step). Columns, because OpenBLAS multiplies by a transposed operand of
        # this shape 4x slower (20 against 5 microseconds at 10 x 64 x 320).
        shots_T = np.hstack([image_logit_scale * l2_normalize(f).T, np.zeros_like(f.T)])
        self.xp, asarray = backend.xp, backend.asarray
        inputs_T = np.vstack([f.T, onehot.T]) if class_bias else f.T
        (self.f, self.inputs_T, self.W, self.W_T, self.class_mean, self.inverse_counts,
         self.T_unit, self.pre_unit, self.column_weights, self.weighted_targets,
         self.shots_T) = (
            asarray(np.ascontiguousarray(a)) for a in (
                f, inputs_T, W, W.T, onehot.T / counts, 1 / counts, l2_normalize(T),
                l2_normalize(text_pre), weights, targets * weights, shots_T))
        self.y = backend.asindices(y)
        self.flat_targets = self.weighted_targets.reshape(-1)
        self.scores = asarray(np.zeros((n_classes, 2 * n + 2 * n_classes)))
        # Row blocks that go through the same operation share one array, one call for
        # both: the unit bridged shots e above their class means E_raw (one product with
        # W), f_hat above F_raw (one normalisation) and their gradients.
        self.e_and_means = asarray(np.zeros((n + n_classes, W.shape[0])))
        self.f_hat_and_means = asarray(np.zeros((n + n_classes, dim)))
        self.d_f_hat_and_means = asarray(np.zeros((n + n_classes, dim)))

    def value_and_grad(self, P):
        """The loss at ``P`` and its gradient (no autograd).

        Parameters
        ----------
        P : array of shape (dim + n_classes, width), or (dim, width) without class bias
            ``W_pinv`` stacked on the class bias.

        Returns
        -------
        total : scalar array
            The loss.
        d_P : array of the shape of ``P``
            Its gradient.
        """
        xp, n, c, dim = self.xp, self.n, self.n_classes, self.dim
        shots_T, scores = self.shots_T, self.scores
        tokens = self.f @ P[:dim]
        if self.class_bias:
            tokens += take_rows(P[dim:], self.y)  # b_{y_i}, gathered
        e_and_means, f_hat_and_means = self.e_and_means, self.f_hat_and_means
        e, E_raw = e_and_means[:n], e_and_means[n:]
        _, e_norm = unit_rows(tokens, out=e)
        xp.matmul(self.class_mean, e, out=E_raw)
        if self.project_means:  # F_raw, the class mean of f_hat = e W, as E_raw W
            xp.matmul(e_and_means, self.W, out=f_hat_and_means)
        else:  # as the class means of f_hat (a c n d product, not c w d)
            xp.matmul(e, self.W, out=f_hat_and_means[:n])
            xp.matmul(self.class_mean, f_hat_and_means[:n], out=f_hat_and_means[n:])
        units, units_norm = unit_rows(f_hat_and_means)
        f_hat_unit, F_hat = units[:n], units[n:]
        E, E_norm = unit_rows(E_raw)
        shots_T[:, n:] = f_hat_unit.T
        xp.matmul(F_hat, shots_T, out=scores[:, : 2 * n])
        xp.matmul(self.T_unit, F_hat.T, out=scores[:, 2 * n : 2 * n + c])
        xp.matmul(self.pre_unit, E.T, out=scores[:, 2 * n + c :])
        log_p, residual = log_softmax_and_residual(scores, self.weighted_targets,
                                                   self.column_weights)
        total = -(log_p.reshape(-1) @ self.flat_targets)
        # back through the scores, the normalisations and the class means (whose
        # transposes are gathers of the classes' rows, not one-hot products)
        d_units = self.d_f_hat_and_means
        xp.matmul(residual[:, n : 2 * n].T, F_hat, out=d_units[:n])
        xp.matmul(residual[:, : 2 * n], shots_T.T, out=d_units[n:])
        d_units[n:] += residual[:, 2 * n : 2 * n + c].T @ self.T_unit
        d_f_hat_and_means = unit_rows_grad(units, units_norm, d_units)
        d_E_raw = unit_rows_grad(E, E_norm, residual[:, 2 * n + c :].T @ self.pre_unit)
        if self.project_means:
            d_e_and_means = d_f_hat_and_means @ self.W_T
            d_e, d_E_raw_via_F = d_e_and_means[:n], d_e_and_means[n:]
            d_E_raw += d_E_raw_via_F
        else:
            d_f_hat, d_F_raw = d_f_hat_and_means[:n], d_f_hat_and_means[n:]
            d_f_hat += take_rows(d_F_raw * self.inverse_counts, self.y)
            d_e = d_f_hat @ self.W_T
        d_e += take_rows(d_E_raw * self.inverse_counts, self.y)
        d_P = self.inputs_T @ unit_rows_grad(e, e_norm, d_e)  # [f, onehot(y)]^T d_tokens
        if not self.class_bias:
            return total, d_P
        # the variance of the bias norms, and its gradient 2 (||b_c|| - mean) / c along
        # b_c / ||b_c|| (0 at b_c = 0, as torch's norm gradient there; a norm below
        # NORM_EPS counts as NORM_EPS, a difference far below float32's resolution)
        bias_unit, norms = unit_rows(P[dim:])
        deviation = norms[:, 0] - norms.sum() / c
        total = total + self.bias_norm_weight / c * (deviation @ deviation)
        d_P[dim:] += bias_unit * (2 * self.bias_norm_weight / c * deviation)[:, None]
        return total, d_P
