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
    fit. ``zero_shot_logits`` is a constant (it gets no gradient).
    """
    n_samples = cosines.shape[0]
    rows = torch.arange(n_samples, device=cosines.device)
    if zero_shot_logits is None:
        logits = cosines * logit_scale
    else:
        logits = torch.add(zero_shot_logits, cosines, alpha=logit_scale)
    true_logit = logits[rows, y]
    top = logits.amax(dim=1, keepdim=True)
    grad = logits.sub_(top).exp_()  # in place: the logits are not needed any more
    total = grad.sum(dim=1, keepdim=True)
    loss = (total.log() + top).squeeze(1).sub(true_logit).mean()
    # d CE / d cos = logit_scale * (softmax - onehot) / n
    grad.mul_(logit_scale / n_samples / total)
    grad[rows, y] -= logit_scale / n_samples
    if triplet_weight:
        negative = hardest_negatives(cosines, y)
        hinge = margin - cosines[rows, y] + cosines[rows, negative]
        loss = loss + triplet_weight * hinge.clamp_min(0).mean()
        step = (triplet_weight / n_samples) * (hinge > 0).to(grad.dtype)
        grad[rows, y] -= step
        grad[rows, negative] += step
    return loss, grad


class _RefinementLoss(torch.autograd.Function):
    """:func:`cmm_refinement_loss` for autograd, from ``W`` and the prototypes: the
    gradient through the normalisations and the products is formed in the forward pass
    (one autograd node instead of a dozen, which dominate a small fit)."""

    @staticmethod
    def forward(ctx, V, y, W, prototypes, zero_shot_logits, logit_scale, triplet_weight,
                margin):
        mapped, mapped_norm = unit_rows(V @ W)
        text, text_norm = unit_rows(prototypes)
        loss, d_cos = _cross_entropy_triplet_and_grad(
            mapped @ text.T, y, zero_shot_logits, logit_scale, triplet_weight, margin)
        d_W = V.T @ unit_rows_grad(mapped, mapped_norm, d_cos @ text)
        d_prototypes = unit_rows_grad(text, text_norm, d_cos.T @ mapped)
        ctx.save_for_backward(d_W, d_prototypes)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        d_W, d_prototypes = ctx.saved_tensors
        return (None, None, d_W * grad_output, d_prototypes * grad_output, None, None,
                None, None)


def cmm_refinement_loss(
    V, y, W, prototypes, zero_shot_logits, *, logit_scale, triplet_weight, margin
):
    """Training loss of CMM: cross-entropy of the fused logits plus the triplet loss.

    ``CE(logit_scale * cos(V W, T) + zero_shot_logits, y)
    + triplet_weight * hardest_negative_triplet_loss(cos(V W, T), y, margin)``, with
    its gradient with respect to ``W`` and ``prototypes`` written by hand (equal to
    autograd's through the expression; ``V`` gets none).

    Parameters
    ----------
    V : torch.Tensor of shape (n_samples, dim)
        L2-normalised image features.
    y : torch.Tensor of shape (n_samples,)
        Class indices (int64).
    W : torch.Tensor of shape (dim, dim)
        The image-to-text map.
    prototypes : torch.Tensor of shape (n_classes, dim)
        Text prototypes ``T`` (normalised here, so they may be trainable).
    zero_shot_logits : torch.Tensor of shape (n_samples, n_classes) or None
        The fixed zero-shot term ``zero_shot_weight * s * cos(V, T0)``; None for none.
    logit_scale : float
        Temperature of the mapped cosines.
    triplet_weight : float
        Weight of the triplet loss (0 skips it).
    margin : float
        Margin of the triplet loss.

    Returns
    -------
    loss : torch.Tensor
        A scalar.
    """
    return _RefinementLoss.apply(V, y, W, prototypes, zero_shot_logits, float(logit_scale),
                                 float(triplet_weight), float(margin))
