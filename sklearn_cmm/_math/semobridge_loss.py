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
import torch

from .basic import l2_normalize
from .unit_rows import take_rows, unit_rows, unit_rows_grad

#: Floor of the log-probabilities in the gradient: ``exp(-80)`` = 1.8e-35 is a normal
#: float32 (the smallest is 1.2e-38) and far below anything it is added to. Exact ones
#: would be subnormal floats, which x86 CPUs compute about a hundred times slower, and
#: which made whole steps 2.7x slower (100 classes x 1 shot x 512-d).
MIN_LOG_PROBA = -80.0


#: Fewest classes at which :class:`ShotClasses` sums over reshaped shots rather than
#: multiplying by the one-hot matrix. numpy's sum over a middle axis costs more per entry
#: than a product (one core, float32, timeit): at 10 classes x 16 shots x 64-d 5.8 against
#: 3.4 microseconds, 20 x 16 x 64 10.1 against 8.8, while at 100 x 16 the sum takes 34
#: against 218 (64-d) and 85 against 1753 (512-d). SeMoBridge-T's gradient then splits
#: its product with ``[f, onehot(y)]^T`` in two, which at 10-20 classes x 64-d costs
#: more than the one-hot rows.
RESHAPE_MIN_CLASSES = 32


class ShotClasses:
    """Class sums of arrays with a row per shot, the shots in class order.

    With as many shots in every class, a class sum is a sum over the middle axis of the
    rows reshaped to ``(n_classes, shots per class, ...)``: a pass over the rows, where a
    product with the one-hot matrix does ``n_classes`` times the work (at ImageNet scale,
    1000 classes, two of SeMoBridge-T's largest products). Below ``RESHAPE_MIN_CLASSES``
    classes, or with classes of unequal sizes, the sums are that product. (A scatter-add
    would do any sizes in one pass, but is not deterministic on CUDA.)

    Parameters
    ----------
    y : ndarray of shape (n_samples,), int
        Class indices in ``0 .. n_classes - 1``; the reshape needs them sorted (else the
        sums are products).
    n_classes : int
        Number of classes.
    backend : object
        Where the arrays live, as :class:`sklearn_cmm._torch.ArrayBackend`.

    Attributes
    ----------
    onehot_T : array of shape (n_classes, n_samples) or None
        The one-hot matrix's transpose where the sums are products, else None.
    """

    def __init__(self, y, n_classes, backend):
        y = np.asarray(y)
        counts = np.bincount(y, minlength=n_classes)
        by_reshape = (n_classes >= RESHAPE_MIN_CLASSES and counts.min() == counts.max()
                      and np.all(y[1:] >= y[:-1]))
        self.n_classes = n_classes
        self.onehot_T = None if by_reshape else backend.asarray(np.eye(n_classes)[y].T)

    def sums(self, rows, out=None):
        """The class sums of ``rows`` (C-contiguous, a row per shot), into ``out``."""
        xp = np if isinstance(rows, np.ndarray) else torch
        if self.onehot_T is not None:
            return xp.matmul(self.onehot_T, rows, out=out)
        by_class = rows.reshape(self.n_classes, -1, *rows.shape[1:])
        if xp is np:
            return np.add.reduce(by_class, axis=1, out=out)
        return torch.sum(by_class, 1, out=out)


def log_softmax_and_residual(scores, targets, column_weights, out=None):
    """Log-softmax of each column of ``scores`` and its cross-entropies' gradient.

    Parameters
    ----------
    scores : array of shape (n_classes, n_columns)
        Logits, a column for each cross-entropy row (overwritten on numpy arrays).
    targets : array of shape (n_classes, n_columns)
        One-hot targets of the columns, times ``column_weights``.
    column_weights : array of shape (n_columns,)
        Weight of each column in the loss.
    out : array of the shape of ``scores``, or None
        A work array that receives the residual: at ImageNet scale a fresh array of the
        scores' size costs about as much to map as to fill (the OS zeroes its pages each
        time).

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
        scores -= np.log(np.add.reduce(np.exp(scores, out=out), axis=0))
        residual = np.exp(np.maximum(scores, MIN_LOG_PROBA, out=out), out=out)
        log_p = scores
    else:
        log_p = scores.log_softmax(dim=0)
        residual = torch.clamp_min(log_p, MIN_LOG_PROBA, out=out).exp_()
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
    that one AdamW update serves both; its gradient is ``[f, onehot(y)]^T d_tokens``. The
    bias of each shot is gathered (``B[y]``), and so are the classes' rows where a class
    sum is transposed in the gradient. The class means of ``e`` and ``f_hat`` are taken as
    class sums (they are normalised, so the counts drop out), by :class:`ShotClasses`;
    the loss is a sum over shots, so it takes them in class order for it. Where those
    sums are not products with the one-hot matrix, neither is the bias's gradient:
    ``d_P`` is ``f^T d_tokens`` above the class sums of ``d_tokens``.

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
        order = np.argsort(y, kind="stable")
        f, y = f[order], np.asarray(y)[order]
        self.classes = ShotClasses(y, n_classes, backend)
        # the one-hot rows of [f, onehot(y)]^T, the bias's gradient, where class sums
        # are products
        self.bias_grad_by_sums = self.classes.onehot_T is None
        onehot = np.eye(n_classes)[y]
        self.n, self.dim, self.n_classes = n, dim, n_classes
        self.class_bias = class_bias
        # F_hat's class sums as (class sums of e) @ W where the width is below the number
        # of shots: at ImageNet scale (16,000 shots, width 1024) a sixteenth of the work
        self.project_sums = W.shape[0] < n
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
        inputs_T = (np.vstack([f.T, onehot.T]) if class_bias and not self.bias_grad_by_sums
                    else f.T)
        (self.f, self.inputs_T, self.W, self.W_T, self.T_unit, self.pre_unit,
         self.column_weights, self.weighted_targets, self.shots_T) = (
            asarray(np.ascontiguousarray(a)) for a in (
                f, inputs_T, W, W.T, l2_normalize(T), l2_normalize(text_pre), weights,
                targets * weights, shots_T))
        self.y = backend.asindices(y)
        self.flat_targets = self.weighted_targets.reshape(-1)
        self.scores, self.residual = (
            asarray(np.zeros((n_classes, 2 * n + 2 * n_classes))) for _ in range(2))
        # Row blocks that go through the same operation share one array, one call for
        # both: the unit bridged shots e above their class sums E_raw (one product with
        # W), f_hat above F_raw (one normalisation) and their gradients.
        self.e_and_sums = asarray(np.zeros((n + n_classes, W.shape[0])))
        self.f_hat_and_sums = asarray(np.zeros((n + n_classes, dim)))
        self.d_f_hat_and_sums = asarray(np.zeros((n + n_classes, dim)))

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
        shots_T, scores, classes = self.shots_T, self.scores, self.classes
        tokens = self.f @ P[:dim]
        if self.class_bias:
            tokens += take_rows(P[dim:], self.y)  # b_{y_i}, gathered
        e_and_sums, f_hat_and_sums = self.e_and_sums, self.f_hat_and_sums
        e, E_raw = e_and_sums[:n], e_and_sums[n:]
        _, e_norm = unit_rows(tokens, out=e)
        classes.sums(e, out=E_raw)
        if self.project_sums:  # F_raw, the class sum of f_hat = e W, as E_raw W
            xp.matmul(e_and_sums, self.W, out=f_hat_and_sums)
        else:  # as the class sums of f_hat (c n d multiply-adds, not c w d)
            xp.matmul(e, self.W, out=f_hat_and_sums[:n])
            classes.sums(f_hat_and_sums[:n], out=f_hat_and_sums[n:])
        units, units_norm = unit_rows(f_hat_and_sums)
        f_hat_unit, F_hat = units[:n], units[n:]
        E, E_norm = unit_rows(E_raw)
        shots_T[:, n:] = f_hat_unit.T
        xp.matmul(F_hat, shots_T, out=scores[:, : 2 * n])
        xp.matmul(self.T_unit, F_hat.T, out=scores[:, 2 * n : 2 * n + c])
        xp.matmul(self.pre_unit, E.T, out=scores[:, 2 * n + c :])
        log_p, residual = log_softmax_and_residual(scores, self.weighted_targets,
                                                   self.column_weights, out=self.residual)
        total = -(log_p.reshape(-1) @ self.flat_targets)
        # back through the scores, the normalisations and the class sums (whose
        # transposes are gathers of the classes' rows, not one-hot products)
        d_units = self.d_f_hat_and_sums
        xp.matmul(residual[:, n : 2 * n].T, F_hat, out=d_units[:n])
        xp.matmul(residual[:, : 2 * n], shots_T.T, out=d_units[n:])
        d_units[n:] += residual[:, 2 * n : 2 * n + c].T @ self.T_unit
        d_f_hat_and_sums = unit_rows_grad(units, units_norm, d_units)
        d_E_raw = unit_rows_grad(E, E_norm, residual[:, 2 * n + c :].T @ self.pre_unit)
        if self.project_sums:
            d_e_and_sums = d_f_hat_and_sums @ self.W_T
            d_e, d_E_raw_via_F = d_e_and_sums[:n], d_e_and_sums[n:]
            d_E_raw += d_E_raw_via_F
        else:
            d_f_hat, d_F_raw = d_f_hat_and_sums[:n], d_f_hat_and_sums[n:]
            d_f_hat += take_rows(d_F_raw, self.y)
            d_e = d_f_hat @ self.W_T
        d_e += take_rows(d_E_raw, self.y)
        d_tokens = unit_rows_grad(e, e_norm, d_e)
        if self.class_bias and self.bias_grad_by_sums:
            d_P = xp.empty_like(P)  # a fresh array: the caller keeps each gradient
            xp.matmul(self.inputs_T, d_tokens, out=d_P[:dim])
            classes.sums(d_tokens, out=d_P[dim:])
        else:
            d_P = self.inputs_T @ d_tokens  # [f, onehot(y)]^T d_tokens, or f^T d_tokens
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
