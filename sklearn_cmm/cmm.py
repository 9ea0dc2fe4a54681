"""Cross-Modal Mapping: a linear map of CLIP image features into the text space."""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import FewShotClassifierBase, class_prototypes, fill_doc
from ._math.basic import l2_normalize
from ._math.cmm import cmm_logits, cmm_refinement_loss, map_to_text, ridge_map_to_prototypes
from ._torch import as_numpy, as_tensor, minimize_full_batch, resolve_device
from .text import CLIP_IMAGENET_TEMPLATES


@fill_doc
class CrossModalMappingClassifier(TransformerMixin, FewShotClassifierBase):
    """Cross-Modal Mapping (CMM): map image features onto the class text prototypes.

    CLIP's image and text embeddings lie in two separate cones (the modality gap), so text
    prototypes are poor class centres for images. CMM learns a linear map ``W``
    (``dim x dim``) that takes normalised image features into the text space, in two
    stages:

    1. **Closed form** (``init="lstsq"``): the ridge least-squares map that pulls each
       normalised training image ``v_i`` onto its class's text prototype ``t_{y_i}``,
       shrunk toward the identity::

           W0 = argmin ||V W - T_y||^2 + ridge * ||W - I||^2
              = (V^T V + ridge I)^-1 (V^T T_y + ridge I)

    2. **Refinement** (torch, full batch, ``max_iter`` AdamW steps) of the residual
       ``W = W0 + Delta`` (``Delta`` starts at 0) on the loss::

           CE(logit_scale * cos(V W, T) + zero_shot_weight * logit_scale * cos(V, T0), y)
           + triplet_weight * mean_i max(0, margin - cos(v_i W, t_{y_i})
                                               + max_{c != y_i} cos(v_i W, t_c))

       The triplet term is on **cosine similarity**: the anchor is the mapped image, the
       positive its class's text prototype, the negative the most similar wrong-class
       prototype (the hardest negative, chosen per sample at every step). ``T0`` are the
       frozen prototypes; ``T = T0 + Delta_T`` is refined too when ``train_text=True``.

    Prediction is the argmax of the fused logits ``logit_scale * cos(v W, T) +
    zero_shot_weight * logit_scale * cos(v, T0)`` (:meth:`decision_function`), and
    :meth:`predict_proba` is their softmax. :meth:`transform` returns the mapped, unit
    image features ``normalize(normalize(X) @ W)``, e.g. to measure the modality gap with
    :func:`~sklearn_cmm.modality_gap`, to retrieve against text, or to chain another
    estimator.

    Text-free (``text_encoder=None`` and no ``text_features``) the prototypes ``T0`` are
    the normalised class means of the normalised training images; the method runs
    unchanged and maps the images onto their class means.

    Parameters
    ----------
    %(text_parameters)s

    init : {"lstsq", "identity"}, default="lstsq"
        Starting map: the closed-form ridge solution above, or the identity (then the
        refinement alone learns the map).
    ridge : float, default=1.0
        Strength of the closed form's pull toward the identity. Rows of ``V`` have unit
        norm, so ``V^T V`` has trace ``n_samples``; ``ridge=1`` shrinks little when there
        are many shots per dimension and keeps ``W`` near the identity in the directions
        the few shots do not span.
    max_iter : int, default=15
        Refinement steps (full batch). ``0`` keeps the closed form (or the identity)
        exactly, without torch. A step costs about ``4 n_samples * dim * (n_classes +
        dim)`` flops, about 50 GFLOP for 1000 classes x 16 shots x 512 dims (a second or
        more on two CPU cores). The closed form does most of the work; the default is a
        short refinement that keeps such a fit within about half a minute on two CPU
        cores. A GPU affords more steps (with a lower ``learning_rate``).
    learning_rate : float, default=1e-3
        AdamW's learning rate. Adam moves each of the ``dim^2`` entries of ``W`` by up to
        about ``learning_rate`` a step, which for ``dim=512`` is already a sizeable change
        of ``W`` per step; long schedules mostly widen the margins on the training shots
        and push the mapped images away from the text centroid again.
    weight_decay : float, default=1e-2
        AdamW's decoupled weight decay, applied to the residuals ``Delta`` (and
        ``Delta_T``), so that it pulls ``W`` toward the closed form (or the identity) and
        ``T`` toward the frozen prototypes, not toward 0 (a zero map would discard the
        images). Each step shrinks the residuals by ``learning_rate * weight_decay``
        (``1e-5`` at the defaults): a light brake that matters for long schedules.
    triplet_weight : float, default=1.0
        Weight of the triplet loss (0 trains on cross-entropy alone).
    margin : float, default=0.2
        Margin of the triplet loss, in cosine similarity: the mapped image should be
        ``margin`` more similar to its class's prototype than to any other.
    logit_scale : float, default=100.0
        Temperature of both cosine terms: ``logit_scale * cos(v W, T)`` and the zero-shot
        ``logit_scale * cos(v, T0)`` (100 is CLIP's own scale). Using one scale for both
        makes ``zero_shot_weight`` their relative weight.
    zero_shot_weight : float, default=1.0
        Weight of the zero-shot logits fused with CMM's (0 for CMM's alone).
    train_text : bool, default=False
        Also refine the text prototypes (``T = T0 + Delta_T``); the refined unit prototypes
        are ``prototypes_`` and are used at prediction. The zero-shot term keeps ``T0``.
    device : str, default="auto"
        Torch device of the refinement: ``"auto"`` (the GPU when there is one), ``"cpu"``,
        ``"cuda"`` or ``"cuda:N"``. Prediction runs in numpy on the CPU, so a model
        trained on a GPU works anywhere.
    verbose : bool, default=False
        Show a progress bar of the refinement.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    mapping_ : ndarray of shape (n_features, n_features)
        The learned map ``W``, applied as ``normalize(X) @ W``.
    prototypes_ : ndarray of shape (n_classes, n_features)
        Unit class prototypes ``T`` the mapped images are compared with: refined when
        ``train_text=True``, else equal to ``zero_shot_prototypes_``.
    zero_shot_prototypes_ : ndarray of shape (n_classes, n_features)
        Frozen unit prototypes ``T0`` (text, or image class means when text-free).
    prototype_source_ : {"text", "image_means"}
        Where ``T0`` comes from.
    loss_curve_ : ndarray of shape (`n_iter_`,)
        Refinement loss before each step.
    n_iter_ : int
        Refinement steps taken (``max_iter``).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    ZeroShotClassifier : The zero-shot logits CMM is fused with.
    TipAdapterClassifier : Training-free cache model of the shots.
    SeMoBridgeClassifier : Bridges images into the text modality in closed form.
    sklearn_cmm.modality_gap : Distance between the image and text centroids.

    Notes
    -----
    The paper's equations and hyper-parameters were not available when this was written
    (see the package's method notes): the closed-form start, the residual
    parametrisation and the defaults are this package's choices, to be tuned on the
    project's benchmark.

    With ``init="identity"`` and ``max_iter=0`` the logits are ``(1 + zero_shot_weight)
    * logit_scale * cos(v, T0)``: zero-shot CLIP, i.e. :class:`ZeroShotClassifier` with
    that ``logit_scale``. With ``max_iter=0`` the fit is the closed form alone, in
    float64, without torch.

    The refinement trains in float32 on ``device``; the learned arrays are stored as
    float64 numpy arrays and inference is numpy float64, so predictions do not depend on
    the batch and a model trained on a GPU unpickles anywhere. Nothing in the fit is
    random besides the ``n_shots`` draw.

    References
    ----------
    .. [1] X. Yang, P. Peng, W. Xie, X. Lu, J. Wen, "Cross-Modal Mapping: Mitigating the
       Modality Gap for Few-Shot Image Classification", arXiv:2412.20110, 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cmm import CrossModalMappingClassifier
    >>> rng = np.random.RandomState(0)
    >>> text = np.eye(3, 8)
    >>> y = np.repeat([0, 1, 2], 4)
    >>> X = np.eye(3, 8)[y] + 0.5 + 0.3 * rng.randn(12, 8)
    >>> clf = CrossModalMappingClassifier(text_features=text, random_state=0)
    >>> clf.fit(X, y).score(X, y)
    1.0
    >>> clf.transform(X).shape
    (12, 8)
    """

    _parameter_constraints = {
        **FewShotClassifierBase._parameter_constraints,
        "init": [StrOptions({"lstsq", "identity"})],
        "ridge": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "triplet_weight": [Interval(Real, 0, None, closed="left")],
        "margin": [Interval(Real, 0, None, closed="left")],
        "logit_scale": [Interval(Real, 0, None, closed="neither")],
        "zero_shot_weight": [Interval(Real, 0, None, closed="left")],
        "train_text": ["boolean"],
        "device": [str],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        text_features=None,
        *,
        classes=None,
        class_names=None,
        templates=CLIP_IMAGENET_TEMPLATES,
        text_encoder="clip",
        init="lstsq",
        ridge=1.0,
        max_iter=15,
        learning_rate=1e-3,
        weight_decay=1e-2,
        triplet_weight=1.0,
        margin=0.2,
        logit_scale=100.0,
        zero_shot_weight=1.0,
        train_text=False,
        device="auto",
        n_shots=None,
        random_state=None,
        verbose=False,
    ):
        super().__init__(
            text_features,
            classes=classes,
            class_names=class_names,
            templates=templates,
            text_encoder=text_encoder,
            n_shots=n_shots,
            random_state=random_state,
        )
        self.init = init
        self.ridge = ridge
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.triplet_weight = triplet_weight
        self.margin = margin
        self.logit_scale = logit_scale
        self.zero_shot_weight = zero_shot_weight
        self.train_text = train_text
        self.device = device
        self.verbose = verbose

    def _fit(self, X, y_encoded, class_text, rng):
        device = resolve_device(self.device)  # checked even when torch is not needed
        prototypes, self.prototype_source_ = class_prototypes(
            X, y_encoded, len(self.classes_), class_text
        )
        self.zero_shot_prototypes_ = l2_normalize(prototypes)
        V = l2_normalize(X)
        if self.init == "lstsq":
            W0 = ridge_map_to_prototypes(V, y_encoded, self.zero_shot_prototypes_, self.ridge)
        else:
            W0 = np.eye(X.shape[1])
        if self.max_iter == 0:
            self.mapping_ = W0
            self.prototypes_ = self.zero_shot_prototypes_
            self.loss_curve_ = np.empty(0)
        else:
            self._refine(V, y_encoded, W0, device)
        self.n_iter_ = self.max_iter

    def _refine(self, V, y_encoded, W0, device):
        """Train the residuals of ``W`` (and of ``T``) with torch, then store them."""
        V_t = as_tensor(V, device)
        y_t = torch.as_tensor(y_encoded, dtype=torch.int64, device=device)
        T0_t = as_tensor(self.zero_shot_prototypes_, device)
        W0_t = as_tensor(W0, device)
        delta = torch.zeros_like(W0_t, requires_grad=True)
        params = [delta]
        delta_text = None
        if self.train_text:
            delta_text = torch.zeros_like(T0_t, requires_grad=True)
            params.append(delta_text)
        zero_shot_logits = None
        if self.zero_shot_weight:  # constant: computed once
            zero_shot_logits = (self.zero_shot_weight * self.logit_scale) * (V_t @ T0_t.T)

        def loss_fn():
            return cmm_refinement_loss(
                V_t,
                y_t,
                W0_t + delta,
                T0_t if delta_text is None else T0_t + delta_text,
                zero_shot_logits,
                logit_scale=self.logit_scale,
                triplet_weight=self.triplet_weight,
                margin=self.margin,
            )

        self.loss_curve_ = minimize_full_batch(
            params,
            loss_fn,
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            verbose=self.verbose,
            desc=type(self).__name__,
        )
        # The float64 start plus the float32 residual: max_iter=0 and tiny steps stay exact.
        self.mapping_ = W0 + as_numpy(delta)
        if delta_text is None:
            self.prototypes_ = self.zero_shot_prototypes_
        else:
            self.prototypes_ = l2_normalize(self.zero_shot_prototypes_ + as_numpy(delta_text))

    def _logits(self, X):
        return cmm_logits(
            X,
            self.mapping_,
            self.prototypes_,
            self.zero_shot_prototypes_,
            self.logit_scale,
            self.zero_shot_weight,
        )

    def transform(self, X):
        """Map image features into the text space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        X_mapped : ndarray of shape (n_samples, n_features)
            ``normalize(normalize(X) @ mapping_)``: unit rows comparable with the text
            prototypes by cosine similarity.
        """
        return map_to_text(self._validated_features(X), self.mapping_)
