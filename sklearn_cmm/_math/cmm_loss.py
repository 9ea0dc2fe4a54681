"""Cross-Modal Mapping's refinement losses, in torch (float32, on the training device)."""

import torch

from .unit_rows import unit_rows, unit_rows_grad


def hardest_negative_triplet_loss(cosines, y, margin):
    """Triplet hinge with the most similar wrong class as negative, on cosine similarity.

    ``mean_i max(0, margin - cos(a_i, t_{y_i}) + max_{c != y_i} cos(a_i, t_c))``, where
    ``cosines[i, c] = cos(a_i, t_c)`` between anchor ``i`` (a mapped image) and class
    prototype ``c`` (its class's text is the positive).

    Parameters
    ----------
    cosines : torch.Tensor of shape (n_samples, n_classes)
        Cosine similarity of each anchor to each class prototype; at least two classes.
    y : torch.Tensor of shape (n_samples,)
        Class index of each anchor (int64).
    margin : float
        How much more similar the positive must be than the hardest negative.

    Notes
    -----
    The hardest negative is chosen without gradient (as ``argmax``); the loss is then
    differentiated through the two cosines it uses. Among tied negatives one is taken.

    Returns
    -------
    loss : torch.Tensor
        A scalar.
    """
    negative = hardest_negatives(cosines, y)
    # One gather for both, so that the backward pass scatters into one (n, n_classes) array.
    pair = cosines.gather(1, torch.stack([y, negative], dim=1))
    return torch.relu(margin - pair[:, 0] + pair[:, 1]).mean()


def hardest_negatives(cosines, y):
    """Index of the most similar wrong class of each row (no gradient).

    Parameters
    ----------
    cosines : torch.Tensor of shape (n_samples, n_classes)
        Similarities; at least two classes.
    y : torch.Tensor of shape (n_samples,)
        The right class of each row (int64).

    Returns
    -------
    negatives : torch.Tensor of shape (n_samples,)
        ``argmax_{c != y_i} cosines[i, c]`` (one of them, among ties).
    """
    with torch.no_grad():
        top2 = cosines.topk(2, dim=1).indices
        return torch.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])


def _cross_entropy_triplet_and_grad(cosines, y, zero_shot_logits, logit_scale,
                                    triplet_weight, margin):
    """``CE(logit_scale * cos + zero_shot_logits, y) + w * triplet(cos, y, margin)`` and
    its gradient with respect to ``cos``, in a few passes over the ``(n_samples,
    n_classes)`` matrix.

    The gradient is the softmax minus the one-hot labels, plus the triplet's +-1 at the
    hardest negative and the positive. Autograd through the same expression allocates
    about four times as many ``(n_samples, n_classes)`` arrays, which dominates a large
    fit. ``zero_shot_logits`` is a constant (it gets no gradient). The entries of a row
    are read and written with ``gather``/``scatter_add_``, a third of the cost of
    indexing with row and column arrays at few-shot sizes.
    """
    n_samples = cosines.shape[0]
    true_class = y[:, None]
    if zero_shot_logits is None:
        logits = cosines * logit_scale
    else:
        logits = torch.add(zero_shot_logits, cosines, alpha=logit_scale)
    true_logit = logits.gather(1, true_class)
    top = logits.amax(dim=1, keepdim=True)
    grad = logits.sub_(top).exp_()  # in place: the logits are not needed any more
    total = grad.sum(dim=1, keepdim=True)
    loss = (total.log() + top).sub_(true_logit).mean()
    # d CE / d cos = logit_scale * (softmax - onehot) / n
    grad.mul_(logit_scale / n_samples / total)
    grad.scatter_add_(1, true_class, true_logit.new_full(true_logit.shape,
                                                         -logit_scale / n_samples))
    if triplet_weight:
        pair = torch.stack([y, hardest_negatives(cosines, y)], dim=1)
        positive, negative = cosines.gather(1, pair).unbind(1)
        hinge = negative.sub_(positive).add_(margin)
        loss = loss + triplet_weight * hinge.clamp_min(0).mean()
        step = (hinge > 0).to(grad.dtype).mul_(triplet_weight / n_samples)
        grad.scatter_add_(1, pair, torch.stack([-step, step], dim=1))
    return loss, grad


class _RefinementLoss(torch.autograd.Function):
    """:func:`cmm_refinement_loss` for autograd: the whole gradient, through the
    residuals, the normalisations, the products and the penalty, is formed in the forward
    pass (one autograd node instead of a dozen, which dominate a small fit)."""

    @staticmethod
    def forward(ctx, delta, delta_text, V, y, W0, T0, zero_shot_logits, logit_scale,
                triplet_weight, margin, alpha):
        mapped, mapped_norm = unit_rows(V @ (W0 + delta))
        text, text_norm = unit_rows(T0 if delta_text is None else T0 + delta_text)
        loss, d_cos = _cross_entropy_triplet_and_grad(
            mapped @ text.T, y, zero_shot_logits, logit_scale, triplet_weight, margin)
        d_delta = V.T @ unit_rows_grad(mapped, mapped_norm, d_cos @ text)
        d_text = None
        if delta_text is not None:
            d_text = unit_rows_grad(text, text_norm, d_cos.T @ mapped)
        if alpha:
            residuals = [delta] if delta_text is None else [delta, delta_text]
            loss = loss + (alpha / 2) * sum(torch.dot(r.reshape(-1), r.reshape(-1))
                                            for r in residuals)
            d_delta.add_(delta, alpha=alpha)
            if d_text is not None:
                d_text.add_(delta_text, alpha=alpha)
        ctx.save_for_backward(d_delta, d_text)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        d_delta, d_text = ctx.saved_tensors
        return (d_delta * grad_output, None if d_text is None else d_text * grad_output,
                *[None] * 9)


def cmm_refinement_loss(
    delta, delta_text, V, y, W0, T0, zero_shot_logits, *, logit_scale, triplet_weight,
    margin, alpha,
):
    """Training loss of CMM's refinement of ``W = W0 + delta`` and ``T = T0 + delta_text``.

    ``CE(logit_scale * cos(V W, T) + zero_shot_logits, y)
    + triplet_weight * hardest_negative_triplet_loss(cos(V W, T), y, margin)
    + alpha / 2 * (||delta||^2 + ||delta_text||^2)``, with its gradient with respect to
    the residuals written by hand (equal to autograd's through the expression).

    Parameters
    ----------
    delta : torch.Tensor of shape (dim, dim)
        The trained residual of the map.
    delta_text : torch.Tensor of shape (n_classes, dim) or None
        The trained residual of the text prototypes; None keeps ``T0``.
    V : torch.Tensor of shape (n_samples, dim)
        L2-normalised image features.
    y : torch.Tensor of shape (n_samples,)
        Class indices (int64).
    W0 : torch.Tensor of shape (dim, dim)
        The closed-form map the refinement starts from.
    T0 : torch.Tensor of shape (n_classes, dim)
        The zero-shot text prototypes (``T`` is normalised here).
    zero_shot_logits : torch.Tensor of shape (n_samples, n_classes) or None
        The fixed zero-shot term ``zero_shot_weight * s * cos(V, T0)``; None for none.
    logit_scale : float
        Temperature of the mapped cosines.
    triplet_weight : float
        Weight of the triplet loss (0 skips it).
    margin : float
        Margin of the triplet loss.
    alpha : float
        Strength of the L2 penalty on the residuals (0 for none).

    Returns
    -------
    loss : torch.Tensor
        A scalar, differentiable with respect to ``delta`` and ``delta_text``.
    """
    return _RefinementLoss.apply(delta, delta_text, V, y, W0, T0, zero_shot_logits,
                                 float(logit_scale), float(triplet_weight), float(margin),
                                 float(alpha))
