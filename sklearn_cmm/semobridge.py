"""SeMoBridge: bridge image embeddings into CLIP's text modality, closed form or trained."""

import copy
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import FewShotClassifierBase, SearchedBlendMixin, class_prototypes, fill_doc
from ._math.basic import l2_normalize
from ._math.search import MAX_HELD_OUT, held_out_subset, random_candidates
from ._math.semobridge import (
    blend_accuracies,
    bridge,
    bridge_prototypes,
    class_divergence,
    class_weights,
    loo_score_matrices,
    pinv_with_cutoff,
    pseudo_tokens,
    relative_cutoff,
    score_matrices,
    semobridge_logits,
    text_preimage,
    validation_folds,
)
from ._device import check_device
from ._math.calibration import fit_temperature
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

#: The search falls back to the zero-shot term when its best blend scores at most this
#: fraction of the zero-shot term's own accuracy on the held-out shots (or chance): at one
#: shot a class those shots judge the image terms at their worst, and a blend that keeps
#: so little of the zero-shot accuracy there lost to zero-shot on the test beds' held-out
#: draws (the user guide, *When to use it*).
FALLBACK_SCORE_RATIO = 0.25

#: Interval of ``log(1 / image_logit_scale_)`` that "auto" searches: scales 1 to 1000.
AUTO_IMAGE_TEMPERATURE_LOG_BOUNDS = (np.log(1e-3), 0.0)

_non_negative = [Interval(Real, 0, None, closed="left")]


def _held_out_blend(parts):
    """``logits_of(**blend)`` over held-out parts ``(z, F_bar, T, y)``, and their labels."""

    def logits_of(smoothness, **weights):
        return np.concatenate([
            semobridge_logits(*z, class_weights(F_bar, T_fold, smoothness), **weights)
            for z, F_bar, T_fold, _ in parts
        ])

    return logits_of, np.concatenate([part[3] for part in parts])


def _search_accuracies(parts, candidates):
    """Accuracy of each candidate blend on held-out parts ``(z, F_bar, T, y)``."""
    return blend_accuracies(
        [(*z, class_divergence(F_bar, T_fold), y) for z, F_bar, T_fold, y in parts], candidates
    )


def _zero_shot_accuracy(parts):
    """Accuracy of the zero-shot term alone (the argmax of ``z1``) on held-out parts
    ``(z, F_bar, T, y)``: what :func:`_search_accuracies` gives :func:`_zero_shot_blend`,
    without its set-up for many candidates (about a tenth of a searched fit's time at 1000
    classes x 16 shots)."""
    return float(np.mean(np.concatenate([z[0].argmax(axis=1) == y for z, _, _, y in parts])))


def _zero_shot_blend(blend):
    """``blend`` without its image terms: ``exp(-(1 - z1))`` alone (``lambda1 = alpha =
    1``, the defaults). It ranks the classes as the zero-shot cosines do and, nearly
    linear in them over their narrow range, calibrates close to zero-shot's
    probabilities; keeping the searched candidate's ``alpha`` (up to 10) gave log-losses
    up to 0.017 above the zero-shot classifier's on the test beds' validation draws."""
    return {**blend, "lambda1": 1.0, "alpha": 1.0, "lambda2": 0.0, "lambda3": 0.0}


def _pooled_rows(parts, rows):
    """The parts restricted to ``rows`` (sorted) of their queries pooled in order."""
    out, offset = [], 0
    for z, F_bar, T_fold, y in parts:
        mine = rows[(rows >= offset) & (rows < offset + len(y))] - offset
        out.append((tuple(m[mine] for m in z), F_bar, T_fold, y[mine]))
        offset += len(y)
    return out


@fill_doc
class SeMoBridgeClassifier(ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                           SearchedBlendMixin, FewShotClassifierBase):
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

    %(calibration_parameter)s

    text_projection : array-like of shape (width, n_features) or None, default=None
        CLIP's ``text_projection`` matrix, of the CLIP model that made ``X`` (with
        open_clip: ``model.text_projection.detach().cpu().numpy()``). None takes it from
        ``text_encoder`` (an encoder with a ``text_projection`` attribute and an
        ``encode_text_pre_projection`` method).
    pinv_cutoff : float, default=0.3
        Singular values of ``text_projection`` not above it are treated as zero in its
        pseudo-inverse (the paper's 0.3; the bridge's only regularisation). Unused
        without a projection (``bridge_="identity"``).
    pinv_cutoff_relative : bool, default=False
        Read ``pinv_cutoff`` as a fraction of the largest singular value of
        ``text_projection`` instead of an absolute threshold.
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
    search : {"cv"} or None, default="cv"
        ``"cv"`` chooses ``smoothness``, ``alpha``, ``beta``, ``gamma`` and the lambdas by
        leave-one-out cross-validation on the training shots: each shot is scored with
        ``z2`` and ``z3`` (and, text-free, ``z1``) from prototypes built without it. The
        candidates are the given values, then ``n_search_trials - 1`` random draws in the
        authors' search space (``smoothness`` in [0, 1.5], ``alpha``, ``beta``, ``gamma`` in
        [0, 10], lambdas in [0, 1]). No test data is used (the authors tune on the test
        set for ImageNet). With ``train=True`` and ``early_stopping`` the search scores the
        validation folds' shots with the bridges trained without them (see
        ``early_stopping``); when the chosen checkpoint is step 0 (no training) it is the
        closed form's leave-one-out search. Beyond 1000 held-out shots a random 1000 of
        them are scored (drawn with ``random_state``; the temperature of ``calibration``
        is fitted on the same ones). Cost, with ``m = min(n_shots_total, 1000)``: the
        three ``m x n_classes`` score matrices once; then, once for all trials, the
        classes that no blend can make win are dropped exactly (a class whose three
        scores and ``D_c`` are all below another's, see
        :func:`~sklearn_cmm._math.semobridge.blend_contenders`), some 15 of 1000 classes
        a shot remaining; a trial costs three exponentials of those ``m x 15`` scores.
        The choice is the full argmax's, ties included. At 1000 classes x 16 shots (512-d,
        one core) the searched fit takes 2x the plain fit (3.6x with
        ``calibration=None``; ``benchmarks/bench_search.py``). None uses the given
        values as they are (the authors' fixed first trial at the defaults): on the
        validation draws of three test beds it was up to 34 points less accurate at one
        and four shots and its log-loss above zero-shot's at one shot (user guide).
    n_search_trials : int, default=500
        Candidates tried by ``search="cv"``.
    train : bool, default=False
        Train the bridge (SeMoBridge-T): ``W_pinv`` (initialised to the cut-off
        pseudo-inverse) and, with ``class_bias``, a bias per class added to the bridged
        shots before the normalisation, by full-batch AdamW on the loss
        ``image_loss_weight img + text_loss_weight (txtp + txte) / 2
        + consistency_loss_weight consistency + bias_norm_loss_weight bias_norm``
        (see :class:`~sklearn_cmm._math.semobridge_loss.SeMoBridgeTLoss`). Queries are
        bridged without bias.
    class_bias : bool, default=True
        Train the class-specific bias (only with ``train=True``).
    max_iter : int, default=1000
        Training steps, one full batch each (the authors train 5000 epochs); with
        ``early_stopping`` the most steps a checkpoint may have. A step costs a few
        products of the ``(n_shots_total, n_features)`` shots with a
        ``(n_features, width)`` matrix: seconds for all 5000 on a GPU, but about 0.13 s a
        step on one CPU core for 1,600 shots of dimension 512.
    learning_rate : float, default=1.5e-4
        AdamW's learning rate after the warm-up.
    weight_decay : float, default=0.01
        AdamW's weight decay.
    warmup_iter : int, default=500
        Steps of the authors' linear warm-up: 1e-5 at step 0, then
        ``learning_rate * step / warmup_iter`` (see
        :func:`~sklearn_cmm._math.semobridge.warmup_learning_rate`).
    early_stopping : bool, default=True
        Choose the number of training steps (the checkpoint) on validation shots, as the
        authors keep the epoch of best validation accuracy. The shots of each class with
        at least two are dealt into two folds; two bridges are trained in lockstep, each
        on the other fold (and every single-shot class), and every
        ``validation_interval`` steps the held-out shots are classified at the given
        blend (the authors' rule). The step of the best pooled accuracy (the earliest
        among equals; step 0 is the closed form) is ``best_iter_``; the bridge is then
        trained on all shots for ``best_iter_`` steps, and ``search="cv"`` searches the
        blend on the two folds' held-out scores at that checkpoint. Without a class of two
        shots there is nothing to validate a training on and the fit is the closed form
        (``best_iter_ = 0``; training blindly lost accuracy on every test bed, see the
        user guide). False trains ``max_iter`` steps on all shots (and ``search="cv"`` is
        then leave-one-out on shots the bridge was trained on, which is optimistic).
    validation_interval : int, default=50
        Steps between two checkpoints of ``early_stopping`` (the last step is one too).
    n_iter_no_change : int or None, default=5
        Stop the validation training after this many checkpoints without a better
        accuracy (the budget follows the problem: where training does not help, it stops
        after ``n_iter_no_change * validation_interval`` steps); None runs ``max_iter``.
    image_logit_scale : "auto" or float, default="auto"
        Temperature of the ``img`` loss: the authors use the CLIP model's own
        ``exp(logit_scale)`` (100 for OpenAI's models), which the features do not carry.
        ``"auto"`` estimates it as the temperature that calibrates the zero-shot cosines
        on the shots (:func:`~sklearn_cmm._math.semobridge.calibrated_logit_scale`).
    image_loss_weight : float, default=0.5
        Weight of the ``img`` loss (cross-entropy of
        ``image_logit_scale * cos(f, F_hat_c)``).
    text_loss_weight : float, default=0.5
        Weight of the mean of the ``txtp`` (``cos(F_hat_c, T_j)``) and ``txte`` (bridged
        tokens vs pre-projection text) losses.
    consistency_loss_weight : float, default=0.1
        Weight of the ``consistency`` loss (``cos(f_hat_i, F_hat_c)``).
    bias_norm_loss_weight : float, default=0.1
        Weight of the variance of the class biases' norms.
    device : str, default="auto"
        Torch device of the training (``"auto"``: the first GPU if any, else the CPU). On
        a GPU the training runs on torch tensors, on the CPU on numpy arrays (the same
        code and results to float32 rounding; numpy's operations cost less at few-shot
        sizes, see the user guide, *Speed*). Prediction always runs in float64 numpy.
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
        Accuracy of the chosen blend on the shots it was searched on (``search="cv"``).
        When the best candidate scores at most a quarter of the zero-shot term's
        accuracy on the same shots, or at most chance (``search_score_ <= max(1 /
        n_classes, FALLBACK_SCORE_RATIO * zero-shot score)``: at one shot a class the
        held-out shots judge the image terms at their worst, and on many classes every
        candidate can fail them), the blend falls back to its zero-shot term
        (``lambda2_ = lambda3_ = 0``, ``alpha_ = lambda1_ = 1``) with a ``UserWarning``.
    loss_curve_ : ndarray of shape (`best_iter_`,) or None
        SeMoBridge-T's loss before each step of the final training; None without one.
    n_iter_ : int
        Training steps run: those of the validation training with ``early_stopping``
        (0 when nothing could be validated), else ``max_iter``; 1 for the closed form
        (``train=False``), which is one solve (scikit-learn wants ``n_iter_ >= 1`` from
        every estimator with ``max_iter``).
    best_iter_ : int or None
        Steps of the final bridge's training (0: the closed form); None without training.
    validation_scores_ : ndarray of shape (n_checkpoints,) or None
        Pooled held-out accuracy at each checkpoint (steps 0, ``validation_interval``, ...
        and the last step run) with ``early_stopping``; None otherwise.
    image_logit_scale_ : float or None
        The ``img`` loss temperature used; None without training.
    temperature_ : float
        Temperature of :meth:`predict_proba` (``softmax(logits / temperature_)``), fitted
        on the held-out shots the blend is searched on (leave-one-out, every class's
        prototypes a shot short as the held-out shot's own is, or the validation folds';
        at most 1000 of them, see ``search``). The blend's logits are sums of kernels in
        [0, 1], far too flat as they are; predictions do not depend on it.
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

    The blend's defaults are the authors' first search trial (the first candidate of
    ``search="cv"``, and the blend of ``search=None``): ``alpha = beta = gamma = 1`` and
    ``smoothness=0.01``; the lambdas are 1 (the authors start at 0.5 each, which gives the
    same predictions at half the logits). ``p_c`` is a softmax of cosines without
    temperature, hence close to uniform: ``D_c`` is about ``log2(n_classes)`` and the class
    weights also scale both image terms against the zero-shot term by about
    ``exp(smoothness * log2(n_classes))`` (some 27 for ``smoothness=0.5`` and 100
    classes), so a large default would depend on the number of classes. The losses,
    optimiser, learning rate and warm-up are the authors'; the checkpoint is chosen on
    validation folds of the shots as the authors choose it on a validation split, within
    ``max_iter=1000`` steps instead of their 5000 (the user guide has the evidence for
    each of these defaults). The default ``search="cv"`` tunes the blend on the shots;
    with one shot per class, leaving a shot out empties its class's few-shot prototypes,
    so the search can only learn to trust the zero-shot term.

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
    pre-projection features are ``T @ pinv(W)`` (exact pseudo-inverse, as a least-squares
    solve): for a projection of full row rank (CLIP's) this is the unique preimage of the
    prototype, equal in direction to the mean pre-projection feature up to the per-prompt
    normalisation of the ensembling; ``txte`` only uses its direction.

    Binary problems: :meth:`decision_function` returns ``logit_1 - logit_0``, as
    scikit-learn asks; :meth:`predict_proba` is the softmax of the two scaled logits.

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
        "pinv_cutoff_relative": ["boolean"],
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
        "early_stopping": ["boolean"],
        "validation_interval": [Interval(Integral, 1, None, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), None],
        "image_logit_scale": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
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
        pinv_cutoff_relative=False,
        alpha=1.0,
        beta=1.0,
        gamma=1.0,
        lambda1=1.0,
        lambda2=1.0,
        lambda3=1.0,
        smoothness=0.01,
        search="cv",
        n_search_trials=500,
        train=False,
        class_bias=True,
        max_iter=1000,
        learning_rate=1.5e-4,
        weight_decay=0.01,
        warmup_iter=500,
        early_stopping=True,
        validation_interval=50,
        n_iter_no_change=5,
        image_logit_scale="auto",
        image_loss_weight=0.5,
        text_loss_weight=0.5,
        consistency_loss_weight=0.1,
        bias_norm_loss_weight=0.1,
        n_shots=None,
        n_views=1,
        device="auto",
        random_state=None,
        calibration="temperature",
        n_jobs=None,
        verbose=False,
    ):
        super().__init__(
            text_features,
            classes=classes,
            class_names=class_names,
            templates=templates,
            text_encoder=text_encoder,
            n_shots=n_shots,
            n_views=n_views,
            random_state=random_state,
            calibration=calibration,
            n_jobs=n_jobs,
        )
        self.text_projection = text_projection
        self.pinv_cutoff = pinv_cutoff
        self.pinv_cutoff_relative = pinv_cutoff_relative
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
        self.early_stopping = early_stopping
        self.validation_interval = validation_interval
        self.n_iter_no_change = n_iter_no_change
        self.image_logit_scale = image_logit_scale
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
        check_device(self.device)  # also when nothing is trained
        n_classes = len(self.classes_)
        W, self.bridge_ = self._projection(class_text, X.shape[1])
        T, self.prototype_source_ = class_prototypes(X, y_encoded, n_classes, class_text)
        if self.bridge_ == "identity":
            W_pinv = W
        else:
            cutoff = self.pinv_cutoff
            if self.pinv_cutoff_relative:
                cutoff = relative_cutoff(W, cutoff)
            W_pinv = pinv_with_cutoff(W, cutoff)
            if not W_pinv.any():
                raise ValueError(
                    f"pinv_cutoff={self.pinv_cutoff} is not below any singular value of "
                    f"text_projection (largest: {np.linalg.norm(W, 2):.3g}): the bridge "
                    "would map every image to zero."
                )
        blend = {name: getattr(self, name) for name in SEARCH_SPACE}
        candidates = None
        if self.search == "cv":
            candidates = random_candidates(SEARCH_SPACE, blend, self.n_search_trials, rng)
        bias, self.loss_curve_, self.n_iter_, self.best_iter_ = None, None, 1, None
        self.validation_scores_, self.image_logit_scale_ = None, None
        validated = accuracies = None  # held-out scores of the chosen checkpoint, searched
        # Leave-one-out draws from the state before training, so that SeMoBridge-T whose
        # validation keeps step 0 is SeMoBridge with the same random_state, draws included.
        loo_rng = copy.deepcopy(rng)
        if self.train:
            W_pinv, bias, validated, accuracies = self._train(
                X, y_encoded, W, W_pinv, T, class_text, rng, candidates
            )
        self.text_projection_, self.projection_pinv_, self.class_bias_ = W, W_pinv, bias
        self.text_prototypes_ = T

        tokens = pseudo_tokens(X, W_pinv, None if bias is None else bias[y_encoded])
        self.bridged_prototypes_, self.image_prototypes_ = bridge_prototypes(
            X, tokens, W, y_encoded, n_classes
        )
        loo = None
        if validated is None and (candidates is not None or self.calibration is not None):
            # Leave-one-out on (at most MAX_HELD_OUT of) the shots, as the bridge saw them;
            # with views, an image is left out with its views and its own row is scored.
            v = self.n_views
            queries = held_out_subset(len(y_encoded) // v, loo_rng, MAX_HELD_OUT)
            own = queries * v
            f_hat = (tokens[own] @ W if bias is None  # the queries, bridged without bias
                     else bridge(X[own], W_pinv, W))

            def loo(empty_class, every_class=False):
                z = loo_score_matrices(
                    X, f_hat, tokens, y_encoded, n_classes,
                    T if self.prototype_source_ == "text" else None, queries,
                    shots_projection=W, n_views=v, empty_class=empty_class,
                    every_class=every_class,
                )
                return [(z, self.image_prototypes_, T, y_encoded[own])]

            if candidates is not None:  # the search's scores (calibration takes its own)
                validated = loo("zero")

        self.search_score_ = None
        if candidates is not None:
            if accuracies is None:
                accuracies = _search_accuracies(validated, candidates)
            best = int(np.argmax(accuracies))  # the first among equals: the defaults win ties
            blend, self.search_score_ = candidates[best], float(accuracies[best])
            zero_shot_score = _zero_shot_accuracy(validated)
            if self.search_score_ <= max(1 / n_classes, FALLBACK_SCORE_RATIO * zero_shot_score):
                blend = _zero_shot_blend(blend)
                warnings.warn(
                    f"search='cv' found no blend that keeps more than {FALLBACK_SCORE_RATIO:g} "
                    "of the zero-shot term's accuracy and beats chance on the held-out shots "
                    f"(best {self.search_score_:.3g}, zero-shot {zero_shot_score:.3g}, chance "
                    f"{1 / n_classes:.3g}): SeMoBridge falls back to its zero-shot term "
                    "(lambda2_ = lambda3_ = 0, alpha_ = lambda1_ = 1). This is most likely at "
                    "one shot a class, where the held-out shots cannot judge the image terms.",
                    UserWarning,
                )
        if self.calibration is not None:
            # Honest logits for the temperature of predict_proba, taken (and dropped) by
            # _calibration_logits: the held-out shots the blend was searched on, scored
            # with a shot left out of every class, so that the query's class is not the
            # one prototype built from fewer shots (its logits understated, the
            # temperature too flat), and with a class whose only image is left out
            # scoring as uninformative, not 0: a cosine of 0 marks the class as unlike
            # its own image (the user guide, *Calibration at one shot* and *at few shots*).
            if loo is not None:
                validated = loo("mean", every_class=True)
            logits_of, y_validated = _held_out_blend(validated)
            self._held_out_logits = (logits_of(**blend), y_validated)
        for name, value in blend.items():
            setattr(self, f"{name}_", value)
        self.class_weights_ = class_weights(self.image_prototypes_, T, self.smoothness_)

    def _projection(self, class_text, n_features):
        """The text projection ``W`` and the kind of bridge it gives."""
        if self.text_projection is not None:
            # a copy, as scikit-learn's estimators keep: text_projection_ is not the
            # user's array, which may change after the fit
            W = check_array(
                self.text_projection, dtype=np.float64, copy=True, input_name="text_projection"
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

    def _train(self, X, y_encoded, W, W_pinv, T, class_text, rng, candidates=None):
        """SeMoBridge-T: choose the number of steps on validation folds, then train.

        Returns the trained ``W_pinv`` and bias, the out-of-fold score matrices of (at
        most ``MAX_HELD_OUT`` of) the held-out shots at the chosen checkpoint, and the
        search's accuracies of ``candidates`` on them (None, None: search by
        leave-one-out; accuracies None without candidates).
        """
        n_classes = len(self.classes_)
        given_pre = None if class_text is None else class_text.pre_projection

        def inputs(rows):
            """The prototypes, their text before the projection and the image logit scale
            of a training on ``rows``, from those rows only where they come from the
            shots: a validation training's held-out images must not shape it."""
            fold_T = T
            if self.prototype_source_ == "image_means":  # the image means of its rows
                fold_T = class_prototypes(X[rows], y_encoded[rows], n_classes, None)[0]
            # the given text before the projection, else the preimage of each prototype
            # under W (see Notes)
            text_pre = given_pre if given_pre is not None else text_preimage(fold_T, W)
            scale = self.image_logit_scale
            if scale == "auto":
                # 1 / the temperature that calibrates the zero-shot cosines
                scale = 1.0 / fit_temperature(
                    l2_normalize(X[rows]) @ fold_T.T, y_encoded[rows],
                    log_bounds=AUTO_IMAGE_TEMPERATURE_LOG_BOUNDS)
            return fold_T, text_pre, float(scale)

        every_row = np.arange(len(y_encoded))
        all_inputs = inputs(every_row)  # the final training's
        self.image_logit_scale_ = all_inputs[2]
        from ._semobridge_training import BridgeTraining, check_converged, run_steps
        from ._torch import ArrayBackend, resolve_device

        backend = ArrayBackend(resolve_device(self.device))
        schedule = dict(
            learning_rate=self.learning_rate, weight_decay=self.weight_decay,
            warmup_iter=self.warmup_iter, validation_interval=self.validation_interval,
            verbose=self.verbose,
        )

        def run_checked(runs, n_steps, checkpoint):
            """The validation's trainings; one that diverged fails the fit, as the final
            training does (its NaN checkpoints would score at chance and be passed over
            without a word)."""
            n_run = run_steps(runs, n_steps, checkpoint=checkpoint, **schedule)
            for training in runs:
                check_converged(training)
            return n_run

        def run(rows):
            fold_T, text_pre, scale = all_inputs if rows is every_row else inputs(rows)
            return BridgeTraining(X[rows], y_encoded[rows], W, W_pinv, fold_T, text_pre,
                                  self, backend, image_logit_scale=scale)

        folds = None  # of the images: an image's views go with it
        if self.early_stopping:
            folds = validation_folds(y_encoded[:: self.n_views], n_classes, rng)
        validated = accuracies = None
        if folds is None:
            self.best_iter_ = self.n_iter_ = self.max_iter
        elif (folds < 0).all():  # nothing to validate a training on: the closed form
            self.best_iter_ = self.n_iter_ = 0
        else:
            validated, closed_form, self.validation_scores_, self.best_iter_, self.n_iter_ = (
                self._validate(X, y_encoded, W, folds, run, run_checked)
            )
            # The search (and the temperature) score the same held-out shots of both.
            rows = held_out_subset(sum(len(part[3]) for part in validated), rng, MAX_HELD_OUT)
            validated, closed_form = _pooled_rows(validated, rows), _pooled_rows(closed_form, rows)
            if candidates is not None and self.best_iter_ > 0:
                # The checkpoint was chosen at the given blend; keep it only if it still
                # beats the closed form once both have their blend searched on the same
                # held-out shots (training helps least where the search helps most).
                accuracies = _search_accuracies(validated, candidates)
                if _search_accuracies(closed_form, candidates).max() >= accuracies.max():
                    self.best_iter_ = 0
        if self.best_iter_ == 0:  # the closed form won: leave-one-out is honest for it
            return W_pinv, None, None, None
        final = run(every_row)
        run_steps([final], self.best_iter_, **schedule)
        self.loss_curve_ = check_converged(final)
        return (*final.parameters(), validated, accuracies)

    def _validate(self, X, y_encoded, W, folds, run, run_steps):
        """Train on each fold's complement in lockstep; score the held-out fold.

        Returns the out-of-fold score matrices at the best checkpoint and at step 0 (the
        closed form), the validation accuracy of every checkpoint, the best checkpoint's
        step (the first among equals) and the steps run.
        """
        v = self.n_views
        held_out = [np.flatnonzero(folds == k) * v for k in (0, 1)]  # own rows
        runs = [run(np.flatnonzero(np.repeat(folds != k, v))) for k in (0, 1)]
        blend = {name: getattr(self, name) for name in SEARCH_SPACE}
        scores, steps, best, first = [], [], None, None

        def checkpoint(step):
            parts = []
            for training, rows in zip(runs, held_out):
                W_pinv, bias = training.parameters()
                tokens = pseudo_tokens(
                    training.X, W_pinv, None if bias is None else bias[training.y]
                )
                F_hat, F_bar = bridge_prototypes(
                    training.X, tokens, W, training.y, len(self.classes_)
                )
                z = score_matrices(X[rows], bridge(X[rows], W_pinv, W), training.T, F_hat,
                                   F_bar)
                parts.append((z, F_bar, training.T, y_encoded[rows]))
            weights = {k: v for k, v in blend.items() if k != "smoothness"}
            correct = sum(
                np.sum(np.argmax(semobridge_logits(
                    *z, class_weights(F_bar, fold_T, blend["smoothness"]), **weights
                ), axis=1) == y)
                for z, F_bar, fold_T, y in parts
            )
            scores.append(correct / sum(len(rows) for rows in held_out))
            steps.append(step)
            nonlocal best, first
            first = parts if first is None else first
            if scores[-1] > max(scores[:-1], default=-1):
                best = parts
            stale = len(scores) - 1 - int(np.argmax(scores))
            return self.n_iter_no_change is not None and stale >= self.n_iter_no_change

        n_run = run_steps(runs, self.max_iter, checkpoint)
        return best, first, np.array(scores), steps[int(np.argmax(scores))], n_run

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

    def _calibration_logits(self, X, y_encoded, class_text, rng):
        return self.__dict__.pop("_held_out_logits")

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
