"""SeMoBridge-T's training loss, in torch (float32, on the training device)."""

import torch
from torch.nn.functional import cross_entropy, normalize


def semobridge_t_loss(
    f,
    y,
    W_pinv,
    W,
    bias,
    T,
    text_pre,
    *,
    n_classes,
    image_weight=0.5,
    text_weight=0.5,
    consistency_weight=0.1,
    bias_norm_weight=0.1,
    image_logit_scale=100.0,
):
    """SeMoBridge-T's training loss on the few-shot images (torch tensors).

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
    W_pinv : torch.Tensor of shape (dim, width)
        The trained pseudo-inverse.
    W : torch.Tensor of shape (width, dim)
        The frozen text projection.
    bias : torch.Tensor of shape (n_classes, width) or None
        The class-specific bias.
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

    Returns
    -------
    total : torch.Tensor
        Scalar loss.
    terms : dict of str -> torch.Tensor
        The unweighted terms ``img``, ``txtp``, ``txte``, ``consistency``, ``bias_norm``.
    """
    tokens = f @ W_pinv
    if bias is not None:
        tokens = tokens + bias[y]
    e = normalize(tokens, dim=1)
    f_hat = e @ W
    counts = torch.bincount(y, minlength=n_classes).to(f.dtype)[:, None]

    def class_mean(rows):
        sums = torch.zeros(n_classes, rows.shape[1], dtype=rows.dtype, device=rows.device)
        return sums.index_add(0, y, rows) / counts

    F_hat = normalize(class_mean(f_hat), dim=1)
    E = normalize(class_mean(e), dim=1)
    classes = torch.arange(n_classes, device=f.device)
    terms = {
        "img": cross_entropy(image_logit_scale * normalize(f, dim=1) @ F_hat.T, y),
        "txtp": cross_entropy(F_hat @ normalize(T, dim=1).T, classes),
        "txte": cross_entropy(E @ normalize(text_pre, dim=1).T, classes),
        "consistency": cross_entropy(normalize(f_hat, dim=1) @ F_hat.T, y),
        "bias_norm": (
            torch.zeros((), dtype=f.dtype, device=f.device)
            if bias is None
            else torch.var(torch.linalg.vector_norm(bias, dim=1), correction=0)
        ),
    }
    total = (
        image_weight * terms["img"]
        + text_weight * (terms["txtp"] + terms["txte"]) / 2
        + consistency_weight * terms["consistency"]
        + bias_norm_weight * terms["bias_norm"]
    )
    return total, terms
