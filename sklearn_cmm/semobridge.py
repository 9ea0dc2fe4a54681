"""SeMoBridge: bridge image embeddings into CLIP's text modality, closed form or trained."""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import FewShotClassifierBase, class_prototypes, fill_doc
from ._math.basic import l2_normalize
from ._math.search import best_candidate, random_candidates
from ._math.semobridge import (
    bridge,
    bridge_prototypes,
    class_weights,
    loo_score_matrices,
    pinv_with_cutoff,
    pseudo_tokens,
    score_matrices,
    semobridge_logits,
    semobridge_t_loss,
)
from ._torch import TRAIN_DTYPE, as_numpy, as_tensor, minimize_full_batch, resolve_device
from .text import CLIP_IMAGENET_TEMPLATES

#: The blend's hyper-parameters and the intervals ``search="cv"`` draws them from (the
#: authors' search space).
SEARCH_SPACE = {
    "smoothness": (0.0, 1.5),
    "alpha": (0.0, 10.0),
    "beta": (0.0, 10.0),
    "gamma": (0.0, 10.0),
    "lambda1": (0.0, 1.0),
    "lambda2": (0.0, 1.0),
    "lambda3": (0.0, 1.0),
}

#: Learning rate at the first step of SeMoBridge-T's linear warm-up (the authors' setting).
WARMUP_START_LR = 1e-5

_non_negative = [Interval(Real, 0, None, closed="left")]


@fill_doc
class SeMoBridgeClassifier(TransformerMixin, FewShotClassifierBase):
    """SeMoBridge: few-shot CLIP classification through a semantic modality bridge.

    An image embedding ``f`` is mapped into the text modality through the pseudo-inverse of
    CLIP's text projection ``W``: ``f_hat = normalize(f @ W_pinv) @ W``. With ``q`` the
    normalised query, ``T`` the class text prototypes, ``F_hat`` and ``F_bar`` the
    normalised class means of the bridged and of the raw few-shot embeddings, three scores
    ``z1 = q . T_c``, ``z2 = q . F_hat_c``, ``z3 = normalize(f_hat(q)) . F_bar_c`` are
    blended into the logits

    ``lambda1 exp(-alpha (1 - z1)) + lambda2 w_c exp(-beta (1 - z2))
    + lambda3 w_c exp(-gamma (1 - z3))``

    with class weights ``w_c = exp(smoothness * D_c)``, ``D_c = log2((1 + 1e-6) /
    (p_cc + 1e-6))`` and ``p_c = softmax_j(F_bar_c . T_j)``. SeMoBridge-T (``train=True``)
    first trains ``W_pinv`` and a class-specific bias on the shots.

    Parameters
    ----------
    %(text_parameters)s

    text_projection : array-like of shape (width, n_features) or None, default=None
        CLIP's ``text_projection`` matrix, of the CLIP model that made ``X`` (with
        open_clip: ``model.text_projection.detach().cpu().numpy()``). None takes it from
        ``text_encoder`` (an encoder with a ``text_projection`` attribute and an
        ``encode_text_pre_projection`` method).
    pinv_cutoff : float, default=0.3
        Singular values of ``text_projection`` not above it are treated as zero in its
        pseudo-inverse (the paper's 0.3; the bridge's only regularisation). Unused
        without a projection (``bridge_="identity"``).
    alpha : float, default=1.0
        Sharpness of the zero-shot term ``exp(-alpha (1 - z1))``.
    beta : float, default=1.0
        Sharpness of the bridged-prototype term ``exp(-beta (1 - z2))``.
    gamma : float, default=1.0
        Sharpness of the bridged-query term ``exp(-gamma (1 - z3))``.
    lambda1, lambda2, lambda3 : float, default=1.0
        Weights of the three terms.
    smoothness : float, default=0.01
        Strength of the class weights ``w_c``; 0 weights every class 1.
    search : {"cv"} or None, default=None
        ``"cv"`` chooses ``smoothness``, ``alpha``, ``beta``, ``gamma`` and the lambdas by
        leave-one-out cross-validation on the training shots: each shot is scored with
        ``z2`` and ``z3`` (and, text-free, ``z1``) from prototypes built without it. The
        candidates are the given values, then ``n_search_trials - 1`` random draws in the
        authors' search space (``smoothness`` in [0, 1.5], ``alpha``, ``beta``, ``gamma`` in
        [0, 10], lambdas in [0, 1]). The score matrices are computed once, so a trial
        costs three exponentials of an ``(n_shots_total, n_classes)`` matrix. No test data
        is used (the authors tune on the test set for ImageNet). With ``train=True`` the
        search runs after training, on the trained bridge.
    n_search_trials : int, default=500
        Candidates tried by ``search="cv"``.
    train : bool, default=False
        Train the bridge (SeMoBridge-T): ``W_pinv`` (initialised to the cut-off
        pseudo-inverse) and, with ``class_bias``, a bias per class added to the bridged
        shots before the normalisation, by full-batch AdamW on the loss
        ``image_loss_weight img + text_loss_weight (txtp + txte) / 2
        + consistency_loss_weight consistency + bias_norm_loss_weight bias_norm``
        (see :func:`~sklearn_cmm._math.semobridge.semobridge_t_loss`). Queries are bridged
        without bias.
    class_bias : bool, default=True
        Train the class-specific bias (only with ``train=True``).
    max_iter : int, default=5000
        Training steps, one full batch each (the authors' 5000 epochs). A step costs a
        few products of the ``(n_shots_total, n_features)`` shots with a
        ``(n_features, width)`` matrix: seconds for all 5000 on a GPU, but about 0.16 s a
        step on one CPU core for 1,600 shots of dimension 512.
    learning_rate : float, default=1.5e-4
        AdamW's learning rate after the warm-up.
    weight_decay : float, default=0.01
        AdamW's weight decay.
    warmup_iter : int, default=500
        Steps of the linear warm-up of the learning rate from 1e-5.
    image_loss_weight : float, default=0.5
        Weight of the ``img`` loss (cross-entropy of ``100 cos(f, F_hat_c)``).
    text_loss_weight : float, default=0.5
        Weight of the mean of the ``txtp`` (``cos(F_hat_c, T_j)``) and ``txte`` (bridged
        tokens vs pre-projection text) losses.
    consistency_loss_weight : float, default=0.1
        Weight of the ``consistency`` loss (``cos(f_hat_i, F_hat_c)``).
    bias_norm_loss_weight : float, default=0.1
        Weight of the variance of the class biases' norms.
    device : str, default="auto"
        Torch device of the training (``"auto"``: the first GPU if any, else the CPU).
        Prediction always runs in float64 numpy.
    verbose : bool or int, default=False
        Show a progress bar during training.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    bridge_ : {"pinv", "identity"}
        ``"pinv"``: the bridge through ``text_projection``; ``"identity"``: text-free mode,
        where the projection is the identity (see Notes).
    text_projection_ : ndarray of shape (width, n_features)
        The projection ``W`` used (the identity in text-free mode).
    projection_pinv_ : ndarray of shape (n_features, width)
        ``W_pinv``: the cut-off pseudo-inverse, or the trained one.
    class_bias_ : ndarray of shape (n_classes, width) or None
        SeMoBridge-T's trained class bias, used for the prototypes ``bridged_prototypes_``.
    prototype_source_ : {"text", "image_means"}
        Where ``text_prototypes_`` come from.
    text_prototypes_ : ndarray of shape (n_classes, n_features)
        ``T``: the unit class text prototypes (text-free: image class means).
    bridged_prototypes_ : ndarray of shape (n_classes, n_features)
        ``F_hat``: normalised class means of the bridged shots.
    image_prototypes_ : ndarray of shape (n_classes, n_features)
        ``F_bar``: normalised class means of the raw shots.
    class_weights_ : ndarray of shape (n_classes,)
        ``w``, for ``smoothness_``.
    alpha_, beta_, gamma_, lambda1_, lambda2_, lambda3_, smoothness_ : float
        The blend used: the parameters, or the search's choice.
    search_score_ : float or None
        Leave-one-out accuracy of the chosen blend on the shots (``search="cv"``).
    loss_curve_ : ndarray of shape (max_iter,) or None
        SeMoBridge-T's loss before each step; None without training.
    n_iter_ : int
        Training steps run (``max_iter``); 1 for the closed form, which is one solve
        (scikit-learn wants ``n_iter_ >= 1`` from every estimator with ``max_iter``).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    TipAdapterClassifier : Zero-shot logits plus a cache of the raw shots.
    ZeroShotClassifier : The zero-shot score ``z1`` alone.

    Notes
    -----
    The formulas are those of the authors' code (``shared/methods/semobridge.md``),
    computed on ``X`` as given: ``F_bar`` averages the raw embeddings, normalisation
    happens where the formulas put it. The token scale ``s`` (mean norm of the
    pre-projection text) cancels under the normalisations and is not computed.

    Defaults: the authors' first search trial. ``alpha = beta = gamma = 1`` and
    ``smoothness=0.01``; the lambdas are 1 (the authors start at 0.5 each, which gives the
    same predictions at half the logits). ``p_c`` is a softmax of cosines without
    temperature, hence close to uniform: ``D_c`` is about ``log2(n_classes)`` and the class
    weights also scale both image terms against the zero-shot term by about
    ``exp(smoothness * log2(n_classes))`` (some 27 for ``smoothness=0.5`` and 100
    classes), so a large default would depend on the number of classes. The training
    settings are the authors'. Use ``search="cv"`` to tune the blend on the shots; with
    one shot per class, leaving a shot out empties its class's few-shot prototypes, so the
    search can only learn to trust the zero-shot term.

    Text-free mode (``text_encoder=None`` and no ``text_features``). There is no text and,
    without ``text_projection``, no bridge: the projection is taken to be the identity
    (``bridge_="identity"``, ``f_hat = normalize(f)``) and ``T`` are the class means of the
    normalised images. The classifier is then a documented blend of image prototypes:
    ``z1 = z2`` is the cosine to the normalised mean of the normalised shots, ``z3`` the
    cosine to the normalised mean of the raw shots. ``train=True`` trains ``W_pinv``
    (initialised to the identity) and the bias with the same losses, ``T`` standing in for
    the text on both sides. Given a ``text_projection`` but no text, the pseudo-inverse
    bridge is used with these image prototypes as ``T``. Given text (``text_features`` or
    an encoder) but no projection from anywhere, ``fit`` raises a ValueError: SeMoBridge
    without its bridge would silently be another method.

    Pre-projection text (SeMoBridge-T's ``txte`` loss). When ``text_projection`` is None
    the encoder gives both the projection and the mean pre-projection feature of each
    class's prompts. When ``text_projection`` is given, the encoder is not asked and the
    pre-projection features are ``T @ pinv(W)`` (exact pseudo-inverse): for a projection
    of full row rank (CLIP's) this is the unique preimage of the prototype, equal in
    direction to the mean pre-projection feature up to the per-prompt normalisation of
    the ensembling; ``txte`` only uses its direction.

    Binary problems: :meth:`decision_function` returns ``logit_1 - logit_0``, as
    scikit-learn asks; :meth:`predict_proba` is the softmax of the two logits.

    References
    ----------
    .. [1] C. Timmermann, H. Lee, W. Lee, "SeMoBridge: Semantic Modality Bridge for
       Efficient Few-Shot Adaptation of CLIP", arXiv:2509.26036, 2025.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cmm import SeMoBridgeClassifier
    >>> rng = np.random.RandomState(0)
    >>> W = np.linalg.qr(rng.randn(8, 8))[0]
    >>> text = np.eye(3, 8)
    >>> y = np.repeat([0, 1, 2], 4)
    >>> X = np.eye(3, 8)[y] + 0.3 * rng.randn(12, 8)
    >>> clf = SeMoBridgeClassifier(text_features=text, text_projection=W, text_encoder=None)
    >>> clf.fit(X, y).score(X, y)
    1.0
    >>> clf.bridge_, clf.transform(X).shape
    ('pinv', (12, 8))
    """

    _parameter_constraints = {
        **FewShotClassifierBase._parameter_constraints,
        "text_projection": ["array-like", None],
        "pinv_cutoff": _non_negative,
        "alpha": _non_negative,
        "beta": _non_negative,
        "gamma": _non_negative,
        "lambda1": _non_negative,
        "lambda2": _non_negative,
        "lambda3": _non_negative,
        "smoothness": _non_negative,
        "search": [StrOptions({"cv"}), None],
        "n_search_trials": [Interval(Integral, 1, None, closed="left")],
        "train": ["boolean"],
        "class_bias": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": _non_negative,
        "warmup_iter": [Interval(Integral, 0, None, closed="left")],
        "image_loss_weight": _non_negative,
        "text_loss_weight": _non_negative,
        "consistency_loss_weight": _non_negative,
        "bias_norm_loss_weight": _non_negative,
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
        text_projection=None,
        pinv_cutoff=0.3,
        alpha=1.0,
        beta=1.0,
        gamma=1.0,
        lambda1=1.0,
        lambda2=1.0,
        lambda3=1.0,
        smoothness=0.01,
        search=None,
        n_search_trials=500,
        train=False,
        class_bias=True,
        max_iter=5000,
        learning_rate=1.5e-4,
        weight_decay=0.01,
        warmup_iter=500,
        image_loss_weight=0.5,
        text_loss_weight=0.5,
        consistency_loss_weight=0.1,
        bias_norm_loss_weight=0.1,
        n_shots=None,
        device="auto",
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
        self.text_projection = text_projection
        self.pinv_cutoff = pinv_cutoff
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.lambda3 = lambda3
        self.smoothness = smoothness
        self.search = search
        self.n_search_trials = n_search_trials
        self.train = train
        self.class_bias = class_bias
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_iter = warmup_iter
        self.image_loss_weight = image_loss_weight
        self.text_loss_weight = text_loss_weight
        self.consistency_loss_weight = consistency_loss_weight
        self.bias_norm_loss_weight = bias_norm_loss_weight
        self.device = device
        self.verbose = verbose

    @property
    def _needs_text_projection(self):
        # Ask the encoder for the projection (and pre-projection text) only when none is given.
        return self.text_projection is None

    def _fit(self, X, y_encoded, class_text, rng):
        n_classes = len(self.classes_)
        W, self.bridge_ = self._projection(class_text, X.shape[1])
        T, self.prototype_source_ = class_prototypes(X, y_encoded, n_classes, class_text)
        if self.bridge_ == "identity":
            W_pinv = W
        else:
            W_pinv = pinv_with_cutoff(W, self.pinv_cutoff)
            if not W_pinv.any():
                raise ValueError(
                    f"pinv_cutoff={self.pinv_cutoff} is not below any singular value of "
                    f"text_projection (largest: {np.linalg.norm(W, 2):.3g}): the bridge "
                    "would map every image to zero."
                )
        bias, self.loss_curve_, self.n_iter_ = None, None, 1
        if self.train:
            W_pinv, bias, self.loss_curve_ = self._train(X, y_encoded, W, W_pinv, T, class_text)
            self.n_iter_ = len(self.loss_curve_)
        self.text_projection_, self.projection_pinv_, self.class_bias_ = W, W_pinv, bias
        self.text_prototypes_ = T

        tokens = pseudo_tokens(X, W_pinv, None if bias is None else bias[y_encoded])
        self.bridged_prototypes_, self.image_prototypes_ = bridge_prototypes(
            X, tokens, W, y_encoded, n_classes
        )
        blend = {name: getattr(self, name) for name in SEARCH_SPACE}
        self.search_score_ = None
        if self.search == "cv":
            f_hat_shots = tokens @ W
            f_hat = f_hat_shots if bias is None else bridge(X, W_pinv, W)
            z1, z2, z3 = loo_score_matrices(
                X, f_hat, f_hat_shots, y_encoded, n_classes,
                T if self.prototype_source_ == "text" else None,
            )

            def logits_of(smoothness, **weights):
                w = class_weights(self.image_prototypes_, T, smoothness)
                return semobridge_logits(z1, z2, z3, w, **weights)

            candidates = random_candidates(SEARCH_SPACE, blend, self.n_search_trials, rng)
            blend, self.search_score_ = best_candidate(logits_of, candidates, y_encoded)
        for name, value in blend.items():
            setattr(self, f"{name}_", value)
        self.class_weights_ = class_weights(self.image_prototypes_, T, self.smoothness_)

    def _projection(self, class_text, n_features):
        """The text projection ``W`` and the kind of bridge it gives."""
        if self.text_projection is not None:
            W = check_array(
                self.text_projection, dtype=np.float64, input_name="text_projection"
            )
        elif class_text is not None and class_text.text_projection is not None:
            W = np.asarray(class_text.text_projection, dtype=np.float64)
        elif class_text is not None:
            raise ValueError(
                "SeMoBridge needs CLIP's text projection to bridge images into the text "
                "modality: pass text_projection (CLIP's text_projection as an array of "
                f"shape (width, {n_features})), or a text_encoder with a text_projection "
                "attribute and an encode_text_pre_projection method. For a classifier "
                "without bridge, use TipAdapterClassifier or ZeroShotClassifier."
            )
        else:
            return np.eye(n_features), "identity"
        if W.ndim != 2 or W.shape[1] != n_features:
            raise ValueError(
                f"text_projection has shape {W.shape}; expected (width, {n_features}): it "
                "must map the text width to the dimension of X."
            )
        return W, "pinv"

    def _train(self, X, y_encoded, W, W_pinv, T, class_text):
        """SeMoBridge-T: train ``W_pinv`` (and the class bias); arrays in, arrays out."""
        device = resolve_device(self.device)
        if class_text is not None and class_text.pre_projection is not None:
            text_pre = class_text.pre_projection
        else:  # the preimage of each prototype under W (see Notes)
            text_pre = T @ np.linalg.pinv(W)
        n_classes = len(self.classes_)
        # Nothing in the training is random: full batch, deterministic initialisation.
        pinv = as_tensor(W_pinv, device).clone().requires_grad_()
        params = [pinv]
        bias = None
        if self.class_bias:
            bias = torch.zeros(
                (n_classes, W.shape[0]), dtype=TRAIN_DTYPE, device=device, requires_grad=True
            )
            params.append(bias)
        f, W_t, T_t, text_pre_t = (as_tensor(a, device) for a in (X, W, T, text_pre))
        y = torch.as_tensor(y_encoded, dtype=torch.long, device=device)

        def loss_fn():
            return semobridge_t_loss(
                f, y, pinv, W_t, bias, T_t, text_pre_t,
                n_classes=n_classes,
                image_weight=self.image_loss_weight,
                text_weight=self.text_loss_weight,
                consistency_weight=self.consistency_loss_weight,
                bias_norm_weight=self.bias_norm_loss_weight,
            )[0]

        losses = minimize_full_batch(
            params,
            loss_fn,
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            warmup_iter=self.warmup_iter,
            warmup_start_lr=WARMUP_START_LR,
            verbose=self.verbose,
            desc="SeMoBridge-T",
        )
        return as_numpy(pinv), None if bias is None else as_numpy(bias), losses

    def _bridge(self, X):
        return bridge(X, self.projection_pinv_, self.text_projection_)

    def _logits(self, X):
        z1, z2, z3 = score_matrices(
            X, self._bridge(X), self.text_prototypes_, self.bridged_prototypes_,
            self.image_prototypes_,
        )
        return semobridge_logits(
            z1, z2, z3, self.class_weights_,
            self.alpha_, self.beta_, self.gamma_,
            self.lambda1_, self.lambda2_, self.lambda3_,
        )

    def transform(self, X):
        """Bridge image embeddings into the text modality: ``normalize(f_hat(X))``.

        Queries are bridged without class bias, as for prediction. In text-free mode
        without training this is ``normalize(X)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        X_bridged : ndarray of shape (n_samples, n_features)
            Unit bridged embeddings.
        """
        return l2_normalize(self._bridge(self._validated_features(X)))
