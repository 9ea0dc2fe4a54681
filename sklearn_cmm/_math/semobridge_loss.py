"""SeMoBridge-T's training loss, in torch (float32, on the training device).

The loss is a few small products of the shots with the bridge and a handful of
cross-entropies over classes. At the sizes of most few-shot problems (a few hundred
shots, dimension 64-512) autograd's op-by-op bookkeeping costs more than the arithmetic,
so the loss and its gradient are written out by hand (:class:`SeMoBridgeTLoss`), with
what does not change between steps (normalised shots and text, the class-mean and
one-hot matrices) computed once.
"""

import torch

from .unit_rows import NORM_EPS, unit_rows as _unit_rows, unit_rows_grad as _unit_rows_grad

TERM_NAMES = ("img", "txtp", "txte", "consistency", "bias_norm")

#: Floor of the log-probabilities in the gradient: ``exp(-80)`` = 1.8e-35 is a normal
#: float32 (the smallest is 1.2e-38) and far below anything it is added to.
MIN_LOG_PROBA = -80.0


def _log_softmax_and_residual(scores, targets):
    """Log-softmax over the classes of ``scores`` (classes x rows: the softmax of each
    column) and ``softmax - targets`` (the scores' CE gradient times the number of rows).

    Class-major because torch's CPU kernel along the first dimension of a (10, 160) matrix
    takes a tenth of the time it takes along the short last dimension of its transpose
    (1.8 against 23 microseconds, measured), and the products give either layout as cheaply.
    Probabilities below ``exp(MIN_LOG_PROBA)`` enter the residual at that value: exact
    ones would be subnormal floats, which x86 CPUs compute with about a hundred times
    slower, and which made whole steps 2.7x slower (100 classes x 1 shot x 512-d).
    """
    log_p = torch.log_softmax(scores, dim=0)
    return log_p, log_p.clamp_min(MIN_LOG_PROBA).exp_().sub_(targets)


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

    Parameters
    ----------
    f : torch.Tensor of shape (n_samples, dim)
        Raw few-shot image embeddings.
    y : torch.Tensor of shape (n_samples,), int
        Their class indices; every class in ``0 .. n_classes - 1`` must occur.
    W : torch.Tensor of shape (width, dim)
        The frozen text projection.
    T : torch.Tensor of shape (n_classes, dim)
        Class text prototypes (normalised here).
    text_pre : torch.Tensor of shape (n_classes, width)
        Class text features before the projection (normalised here).
    n_classes : int
        Number of classes.
    image_weight, text_weight, consistency_weight, bias_norm_weight : float
        Weights of the terms.
    image_logit_scale : float, default=100.0
        Temperature of the ``img`` term (CLIP's logit scale).
    """

    def __init__(self, f, y, W, T, text_pre, *, n_classes, image_weight=0.5,
                 text_weight=0.5, consistency_weight=0.1, bias_norm_weight=0.1,
                 image_logit_scale=100.0):
        self.f, self.W = f, W
        self.onehot = torch.nn.functional.one_hot(y, n_classes).to(f.dtype)
        counts = self.onehot.sum(dim=0)
        self.class_mean = self.onehot.T / counts[:, None]  # (n_classes, n_samples)
        self.eye = torch.eye(n_classes, dtype=f.dtype, device=f.device)
        self.onehot_T = self.onehot.T.contiguous()  # the targets of the class-major scores
        self.onehot_flat = self.onehot_T.reshape(-1)
        # also the ignored input of the scaled products (addmm with beta=0)
        self.zero = torch.zeros((), dtype=f.dtype, device=f.device)
        # The terms in TERM_NAMES order are the cross-entropies' sums of target
        # log-probabilities over -(rows) and the bias norms' squared deviations over
        # n_classes; the total weighs them. As two vector operations rather than a dozen
        # scalar ones, which cost more than the products at few-shot sizes.
        self.term_divisors = torch.tensor(
            [-len(f), -n_classes, -n_classes, -len(f), n_classes],
            dtype=f.dtype, device=f.device)
        self.weights = (float(image_weight), float(text_weight), float(consistency_weight),
                        float(bias_norm_weight))
        w_img, w_text, w_cons, w_bias = self.weights
        self.term_weights = torch.tensor([w_img, w_text / 2, w_text / 2, w_cons, w_bias],
                                         dtype=f.dtype, device=f.device)
        # the img term's logits are scale * cos(f_i, F_hat_c): the scale folded in once
        self.f_unit_scaled = _unit_rows(f)[0].mul_(float(image_logit_scale))
        self.T_unit = _unit_rows(T)[0]
        self.pre_unit = _unit_rows(text_pre)[0]

    def value_and_grad(self, W_pinv, bias):
        """The loss at ``(W_pinv, bias)`` and its gradient (no autograd).

        Parameters
        ----------
        W_pinv : torch.Tensor of shape (dim, width)
            The trained pseudo-inverse.
        bias : torch.Tensor of shape (n_classes, width) or None
            The class-specific bias.

        Returns
        -------
        total : torch.Tensor
            Scalar loss.
        terms : torch.Tensor of shape (5,)
            The unweighted terms, in ``TERM_NAMES`` order.
        d_pinv : torch.Tensor of shape (dim, width)
        d_bias : torch.Tensor of shape (n_classes, width) or None
        """
        w_img, w_text, w_cons, w_bias = self.weights
        n, n_classes = self.onehot.shape
        tokens = self.f @ W_pinv
        if bias is not None:
            tokens = tokens.addmm_(self.onehot, bias)  # + b_{y_i}
        e, e_norm = _unit_rows(tokens)
        f_hat = e @ self.W
        F_hat, F_norm = _unit_rows(self.class_mean @ f_hat)
        E, E_norm = _unit_rows(self.class_mean @ e)
        f_hat_unit, f_hat_norm = _unit_rows(f_hat)
        # scores class-major: [c, i] for class c and shot i, [j, c] for text j and class c
        log_img, r_img = _log_softmax_and_residual(F_hat @ self.f_unit_scaled.T,
                                                   self.onehot_T)
        log_txtp, r_txtp = _log_softmax_and_residual(self.T_unit @ F_hat.T, self.eye)
        log_txte, r_txte = _log_softmax_and_residual(self.pre_unit @ E.T, self.eye)
        log_cons, r_cons = _log_softmax_and_residual(F_hat @ f_hat_unit.T, self.onehot_T)
        # Python numbers in an elementwise operation become tensors converted at every
        # call (some 3 microseconds each on a CPU): constants go in as Scalar arguments
        # (alpha, value) or as tensors made once.
        if bias is None:
            bias_norm = self.zero
        else:
            bias_norms = torch.linalg.vector_norm(bias, dim=1)
            deviation = bias_norms.sub(bias_norms.sum(), alpha=1 / n_classes)
            bias_norm = torch.dot(deviation, deviation)
        # each cross-entropy: minus the mean log-probability of the targets
        terms = torch.stack([
            torch.dot(log_img.reshape(-1), self.onehot_flat), log_txtp.trace(),
            log_txte.trace(), torch.dot(log_cons.reshape(-1), self.onehot_flat), bias_norm,
        ]).div_(self.term_divisors)
        total = torch.dot(terms, self.term_weights)

        # d total / d F_hat from the three terms that use the bridged prototypes
        d_F_hat = torch.addmm(
            self._scaled_mm(r_cons, f_hat_unit, w_cons / n), r_img, self.f_unit_scaled,
            alpha=w_img / n,
        ).addmm_(r_txtp.T, self.T_unit, alpha=w_text / 2 / n_classes)
        d_E = self._scaled_mm(r_txte.T, self.pre_unit, w_text / 2 / n_classes)
        # back through the normalisations and the class means (matrix products)
        d_f_hat = _unit_rows_grad(f_hat_unit, f_hat_norm,
                                  self._scaled_mm(r_cons.T, F_hat, w_cons / n))
        d_f_hat.addmm_(self.class_mean.T, _unit_rows_grad(F_hat, F_norm, d_F_hat))
        d_e = torch.addmm(self.class_mean.T @ _unit_rows_grad(E, E_norm, d_E), d_f_hat,
                          self.W.T)
        d_tokens = _unit_rows_grad(e, e_norm, d_e)
        d_pinv = self.f.T @ d_tokens
        d_bias = None
        if bias is not None:
            d_bias = self.onehot.T @ d_tokens
            # variance of the norms: 2 (||b_c|| - mean) / n_classes along b_c / ||b_c||;
            # 0 at b_c = 0, as torch's norm gradient there: the row is 0, the floored
            # norm keeps its factor finite
            pull = deviation.div_(bias_norms.clamp_min_(NORM_EPS))
            d_bias.addcmul_(bias, pull[:, None], value=2 * w_bias / n_classes)
        return total, terms, d_pinv, d_bias

    def _scaled_mm(self, a, b, scale):
        """``scale * (a @ b)`` in one call (a product and a scaling cost two)."""
        return torch.addmm(self.zero, a, b, beta=0, alpha=scale)


class _LossFunction(torch.autograd.Function):
    """:meth:`SeMoBridgeTLoss.value_and_grad` for autograd (the gradients are formed in
    the forward pass and scaled in the backward pass)."""

    @staticmethod
    def forward(ctx, W_pinv, bias, loss):
        total, terms, d_pinv, d_bias = loss.value_and_grad(W_pinv, bias)
        ctx.save_for_backward(d_pinv, d_bias)
        ctx.mark_non_differentiable(terms)
        return total, terms

    @staticmethod
    def backward(ctx, grad_total, grad_terms):
        d_pinv, d_bias = ctx.saved_tensors
        return d_pinv * grad_total, None if d_bias is None else d_bias * grad_total, None


def semobridge_t_loss(f, y, W_pinv, W, bias, T, text_pre, **options):
    """SeMoBridge-T's loss (:class:`SeMoBridgeTLoss`) at ``(W_pinv, bias)``, for autograd.

    Parameters
    ----------
    f, y, W, T, text_pre, **options
        As for :class:`SeMoBridgeTLoss` (``n_classes`` and the weights are keywords).
    W_pinv : torch.Tensor of shape (dim, width)
        The trained pseudo-inverse.
    bias : torch.Tensor of shape (n_classes, width) or None
        The class-specific bias.

    Returns
    -------
    total : torch.Tensor
        Scalar loss, differentiable with respect to ``W_pinv`` and ``bias`` (its
        gradient is the hand-written one, equal to autograd's through the formulas).
    terms : dict of str -> torch.Tensor
        The unweighted terms ``img``, ``txtp``, ``txte``, ``consistency``, ``bias_norm``
        (without gradient).
    """
    total, terms = _LossFunction.apply(
        W_pinv, bias, SeMoBridgeTLoss(f, y, W, T, text_pre, **options))
    return total, dict(zip(TERM_NAMES, terms.unbind()))
