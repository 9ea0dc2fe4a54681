"""Cross-Modal Mapping: a linear map of CLIP image features into the text space."""

from functools import partial
from numbers import Integral, Real

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import FewShotClassifierBase, class_prototypes, fill_doc
from ._device import check_device
from ._math.basic import class_sums, l2_normalize
from ._math.cmm import cmm_logits, map_to_text, ridge_map_to_prototypes, solves_with_gram
from ._math.calibration import calibrated_log_loss
from ._math.search import MAX_HELD_OUT, spread_subset
from .text import CLIP_IMAGENET_TEMPLATES


@fill_doc
class CrossModalMappingClassifier(ClassNamePrefixFeaturesOutMixin, TransformerMixin, FewShotClassifierBase):
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

    2. **Refinement** (full batch, L-BFGS by default; numpy on the CPU, torch on a GPU)
       of the residual
       ``W = W0 + Delta`` (``Delta`` starts at 0) on the loss::

           CE(logit_scale * cos(V W, T) + zero_shot_weight * logit_scale * cos(V, T0), y)
           + triplet_weight * mean_i max(0, margin - cos(v_i W, t_{y_i})
                                               + max_{c != y_i} cos(v_i W, t_c))
           + alpha / 2 * (||Delta||^2 + ||Delta_T||^2)

       The triplet term is on **cosine similarity**: the anchor is the mapped image, the
       positive its class's text prototype, the negative the most similar wrong-class
       prototype (the hardest negative, chosen per sample at every step). ``T0`` are the
       frozen prototypes; ``T = T0 + Delta_T`` is refined too when ``train_text=True``.

    Prediction is the argmax of the fused logits ``logit_scale * cos(v W, T) +
    zero_shot_weight * logit_scale * cos(v, T0) + image_weight_ * logit_scale * cos(v,
    M)`` (:meth:`decision_function`; ``M`` the image class means, see ``image_weight``), and
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

    %(calibration_parameter)s

    init : {"lstsq", "identity"}, default="lstsq"
        Starting map: the closed-form ridge solution above, or the identity (then the
        refinement alone learns the map).
    ridge : float, default=1.0
        Strength of the closed form's pull toward the identity. Rows of ``V`` have unit
        norm, so ``V^T V`` has trace ``n_samples``; ``ridge=1`` shrinks little when there
        are many shots per dimension and keeps ``W`` near the identity in the directions
        the few shots do not span.
    solver : {"lbfgs", "adamw"}, default="lbfgs"
        Optimiser of the refinement, full batch: L-BFGS (history 10, strong Wolfe line
        search) on the loss plus the ``alpha`` penalty, run until it converges
        (``tol``) or ``max_iter`` iterations; or ``max_iter`` AdamW steps with
        ``learning_rate`` and ``weight_decay`` (the ``alpha`` penalty included). On the
        project's test beds L-BFGS converges in tens of iterations where AdamW needs
        hundreds of steps, at the same cost per step (see the user guide).
    max_iter : int or "auto", default="auto"
        Refinement iterations at most (AdamW: exactly). ``0`` keeps the closed form (or
        the identity) exactly, without torch. ``"auto"`` follows the problem size: as many
        as about ``1e12`` flops afford, between 10 and 100
        (:func:`refinement_budget`); an iteration costs about ``4 n_samples * dim * (dim +
        (2 + train_text) * n_classes)`` flops, so small problems run to convergence, while
        at 1000 classes x 16 shots (0.12 TFLOP an iteration at 512 dims) the floor of 10
        holds. There the default fit, which also refines the three cross-fitted refits of
        ``image_weight="auto"`` and the temperature, takes about 30 s at 512 dims and
        40 s at 1024 on 2 CPU cores (``benchmarks/bench_scale.py``, ``bench_fit.py``).
    tol : float, default=1e-5
        L-BFGS stops when the largest entry of a step or of the gradient is at most
        ``tol``. Ignored by AdamW.
    alpha : float, default=1e-2
        Strength of the L2 penalty ``alpha / 2 * (||Delta||^2 + ||Delta_T||^2)`` added to
        the (mean over samples) loss: it keeps ``W`` near the closed form and ``T`` near
        the text prototypes, so that the converged refinement does not overfit the shots.
    learning_rate : float, default=1e-3
        AdamW's learning rate (``solver="adamw"`` only).
    weight_decay : float, default=1e-2
        AdamW's decoupled weight decay of the residuals ``Delta`` (and ``Delta_T``), a pull
        toward the closed form (or the identity) and the frozen prototypes, not toward 0
        (``solver="adamw"`` only).
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
    image_weight : float or "auto", default="auto"
        Weight of the image-prototype logits ``image_weight * logit_scale * cos(v, M)``
        added at prediction, ``M`` the unit means of each class's normalised shots (the
        image space's nearest class mean, which the map into the text space does not
        use). The map is refined without this term; 0 is the paper's CMM. ``"auto"``
        chooses among 0, 0.25, 0.5, 1, 2, 4 and 8 (``AUTO_IMAGE_WEIGHTS``) the weight
        with the least log-loss of the shots' held-out logits at their fitted temperature
        (smooth, where the accuracy of a few held-out shots moves in steps of one shot;
        ties go to the smaller weight). The held-out logits are those of the calibration's
        three refits, so "auto" costs nothing more with ``calibration`` on; beyond 1000
        shots both score 1000 of them, spread evenly over the classes (deterministic). With one shot
        a class (a held-out shot's class has no other shot), and text-free with a class of
        one shot (no honest refits), "auto" chooses 0.
    train_text : bool, default=True
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
    temperature_ : float
        Temperature of :meth:`predict_proba` (``softmax(logits / temperature_)``), fitted on
        held-out logits of the training shots; 1 with ``calibration=None``.
    mapping_ : ndarray of shape (n_features, n_features)
        The learned map ``W``, applied as ``normalize(X) @ W``.
    prototypes_ : ndarray of shape (n_classes, n_features)
        Unit class prototypes ``T`` the mapped images are compared with: refined when
        ``train_text=True``, else equal to ``zero_shot_prototypes_``.
    zero_shot_prototypes_ : ndarray of shape (n_classes, n_features)
        Frozen unit prototypes ``T0`` (text, or image class means when text-free).
    image_prototypes_ : ndarray of shape (n_classes, n_features)
        Unit means ``M`` of each class's normalised shots.
    image_weight_ : float
        Weight of the image-prototype term: ``image_weight``, or the one "auto" chose.
    prototype_source_ : {"text", "image_means"}
        Where ``T0`` comes from.
    loss_curve_ : ndarray of shape (n_evaluations,)
        Refinement loss at each evaluation (the first is the loss at the start): one per
        AdamW step, and one or more per L-BFGS iteration (its line search).
    n_iter_ : int
        Refinement iterations taken (0 when ``max_iter=0``).
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

    With ``init="identity"``, ``max_iter=0`` and ``image_weight=0`` the logits are ``(1 +
    zero_shot_weight) * logit_scale * cos(v, T0)``: zero-shot CLIP, i.e. :class:`ZeroShotClassifier` with
    that ``logit_scale``. With ``max_iter=0`` the fit is the closed form alone, in
    float64, without torch.

    The refinement trains in float32 on ``device``; the learned arrays are stored as
    float64 numpy arrays and inference is numpy float64, so predictions do not depend on
    the batch and a model trained on a GPU unpickles anywhere. Nothing in the fit is
    random besides the ``n_shots`` draw: ``random_state`` seeds that draw only (the
    refinement starts from the closed form and is deterministic).

    With ``calibration="temperature"`` or ``image_weight="auto"`` the fit also refits the
    map on three folds of the shots (two thirds each) for honest logits to fit
    ``temperature_`` on and to choose ``image_weight_`` by: about three times the cost of a
    fit with neither. Both choices score at most 1000 held-out shots (``MAX_HELD_OUT``),
    spread evenly over the classes. The folds deal each class's shots in turn, in the
    order of ``classes_``, so that every fold holds out a third of the shots; where a
    class's shots are not a multiple of three, renaming the classes (another order) can
    change the folds and so the two choices.

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
        "solver": [StrOptions({"lbfgs", "adamw"})],
        "max_iter": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "tol": [Interval(Real, 0, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "triplet_weight": [Interval(Real, 0, None, closed="left")],
        "margin": [Interval(Real, 0, None, closed="left")],
        "logit_scale": [Interval(Real, 0, None, closed="neither")],
        "zero_shot_weight": [Interval(Real, 0, None, closed="left")],
        "image_weight": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
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
        solver="lbfgs",
        max_iter="auto",
        tol=1e-5,
        alpha=1e-2,
        learning_rate=1e-3,
        weight_decay=1e-2,
        triplet_weight=1.0,
        margin=0.2,
        logit_scale=100.0,
        zero_shot_weight=1.0,
        image_weight="auto",
        train_text=True,
        device="auto",
        n_shots=None,
        n_views=1,
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
        self.init = init
        self.ridge = ridge
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.triplet_weight = triplet_weight
        self.margin = margin
        self.logit_scale = logit_scale
        self.zero_shot_weight = zero_shot_weight
        self.image_weight = image_weight
        self.train_text = train_text
        self.device = device
        self.verbose = verbose

    def _fit(self, X, y_encoded, class_text, rng):
        check_device(self.device)  # checked even when torch is not needed
        # Unit rows once, in float64, for the fit and the cross-fit's refits (each refit
        # had normalised its rows, and converted them to float64 twice).
        V = l2_normalize(X, dtype=np.float64)
        dim = V.shape[1]
        # The closed form's Gram (with at least as many rows as dimensions, else it solves
        # the smaller system), once: each refit of the cross-fit subtracts its held-out
        # rows' from it, a third of the rows' products where its own would take two thirds.
        gram = V.T @ V if self.init == "lstsq" and solves_with_gram(len(V), dim) else None
        self._fit_map(V, y_encoded, class_text, gram)
        if self.image_weight != "auto" and self.calibration is None:
            self.image_weight_ = float(self.image_weight)
            return
        # Held-out terms of the shots: three refits of the map on two thirds of them each,
        # scoring at most MAX_HELD_OUT shots (the choices need no more; at 1000 classes x
        # 16 shots, searching the temperatures on all took 9 of the fit's 14 s).
        y_images = y_encoded[:: self.n_views]  # the cross-fit scores the images
        scored = spread_subset(y_images, MAX_HELD_OUT)

        def fit_fold(model, training):
            fold_gram = None
            if gram is not None and solves_with_gram(training.sum(), dim):
                held_out = V[~training]
                fold_gram = gram - held_out.T @ held_out
            model._fit_map(V[training], y_encoded[training], class_text, fold_gram)

        terms = self._cross_fitted_logits(
            V, y_encoded, class_text, rng, n_folds=CROSS_FIT_FOLDS, fit=fit_fold,
            scores=lambda model, X: np.hstack(model._logit_terms(X)),
            scored=scored,
        )
        mapped, image = np.hsplit(terms, 2)
        y_scored = y_images[scored]

        def logits_of(image_weight):
            return mapped + (self.logit_scale * image_weight) * image

        # The image term is validated only on genuinely held-out shots with another shot
        # of their class (else the cross-fit's logits are the training ones, or a shot's
        # class has no image mean without it).
        can_validate = (self._n_cross_fit_folds(y_encoded, class_text, CROSS_FIT_FOLDS) >= 2
                        and np.bincount(y_images).max() >= 2)
        if self.image_weight == "auto" and not can_validate:
            self.image_weight_ = 0.0
        elif self.image_weight == "auto":
            # min keeps the first of equal losses: the smaller weight.
            self.image_weight_ = min(
                AUTO_IMAGE_WEIGHTS, key=lambda w: calibrated_log_loss(logits_of(w), y_scored)
            )
        else:
            self.image_weight_ = float(self.image_weight)
        if self.calibration is not None:
            # Taken (and dropped) by _calibration_logits.
            self._held_out_logits = logits_of(self.image_weight_), y_scored

    def _fit_map(self, V, y_encoded, class_text, gram=None):
        """Fit the map, the prototypes and the image prototypes (everything but the
        weight) on the L2-normalised features ``V`` (float64); ``gram`` is ``V.T @ V``
        when the caller has it."""
        prototypes, self.prototype_source_ = class_prototypes(
            V, y_encoded, len(self.classes_), class_text
        )
        self.zero_shot_prototypes_ = l2_normalize(prototypes)
        self.image_prototypes_ = l2_normalize(class_sums(V, y_encoded, len(self.classes_)))
        if self.init == "lstsq":
            W0 = ridge_map_to_prototypes(V, y_encoded, self.zero_shot_prototypes_, self.ridge,
                                        gram)
        else:
            W0 = np.eye(V.shape[1])
        max_iter = self._max_iter(*V.shape, len(self.classes_))
        if max_iter == 0:
            self.mapping_ = W0
            self.prototypes_ = self.zero_shot_prototypes_
            self.loss_curve_ = np.empty(0)
            self.n_iter_ = 0
        else:
            self._refine(V, y_encoded, W0, max_iter)

    def _max_iter(self, n_samples, dim, n_classes):
        """``max_iter``, or the "auto" budget (:func:`refinement_budget`)."""
        if self.max_iter != "auto":
            return self.max_iter
        return refinement_budget(n_samples, dim, n_classes, self.train_text)

    def _refine(self, V, y_encoded, W0, max_iter):
        """Train the residuals of ``W`` (and of ``T``), then store them."""
        from ._math.cmm_loss import CMMRefinementLoss
        from ._torch import (ArrayBackend, minimize_full_batch, minimize_lbfgs,
                             resolve_device, to_numpy)

        backend = ArrayBackend(resolve_device(self.device))
        objective = CMMRefinementLoss(
            V, y_encoded, W0, self.zero_shot_prototypes_, backend=backend,
            train_text=self.train_text, logit_scale=self.logit_scale,
            zero_shot_weight=self.zero_shot_weight, triplet_weight=self.triplet_weight,
            margin=self.margin, alpha=self.alpha, in_span=self.solver == "lbfgs",
        )
        residuals = backend.asarray(np.zeros(objective.shape))  # from 0
        value_and_grad = partial(objective.value_and_grad, residuals)
        if self.solver == "lbfgs":
            self.loss_curve_, self.n_iter_ = minimize_lbfgs(
                residuals, value_and_grad, max_iter=max_iter, tol=self.tol,
                entries=objective.entries, verbose=self.verbose, desc=type(self).__name__,
            )
        else:
            self.loss_curve_ = minimize_full_batch(
                residuals,
                value_and_grad,
                max_iter=max_iter,
                learning_rate=self.learning_rate,
                weight_decay=self.weight_decay,
                verbose=self.verbose,
                desc=type(self).__name__,
            )
            self.n_iter_ = max_iter
        # The float64 start plus the float32 residual: max_iter=0 and tiny steps stay exact.
        residuals = objective.residuals(to_numpy(residuals))  # [Delta; Delta_T]
        dim = V.shape[1]
        self.mapping_ = W0 + residuals[:dim]
        if self.train_text:
            self.prototypes_ = l2_normalize(self.zero_shot_prototypes_ + residuals[dim:])
        else:
            self.prototypes_ = self.zero_shot_prototypes_

    def _calibration_logits(self, X, y_encoded, class_text, rng):
        return self.__dict__.pop("_held_out_logits")

    def _logit_terms(self, X):
        """The mapped images' logits (fused with zero-shot) and the image-prototype cosines."""
        mapped = cmm_logits(
            X,
            self.mapping_,
            self.prototypes_,
            self.zero_shot_prototypes_,
            self.logit_scale,
            self.zero_shot_weight,
        )
        return mapped, l2_normalize(X) @ self.image_prototypes_.T

    def _logits(self, X):
        mapped, image = self._logit_terms(X)
        return mapped + (self.logit_scale * self.image_weight_) * image

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


#: Refits on ``(CROSS_FIT_FOLDS - 1) / CROSS_FIT_FOLDS`` of the shots for held-out logits.
CROSS_FIT_FOLDS = 3

#: Weights of the image-prototype term that ``image_weight="auto"`` chooses from, in
#: increasing order (ties go to the smaller).
AUTO_IMAGE_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

#: Floating-point operations the "auto" refinement budget affords: about 10 s of float32
#: products on one core of the development machine (numpy, ~100 GFLOP/s), 30 s at the
#: ~35 GFLOP/s of the torch refinement it was set for.
AUTO_FLOPS = 1e12
#: Bounds of the "auto" number of iterations.
AUTO_MIN_ITER, AUTO_MAX_ITER = 10, 100


def refinement_budget(n_samples, dim, n_classes, train_text):
    """Iterations of the "auto" budget: ``AUTO_FLOPS`` over the flops of one iteration.

    One loss and gradient evaluation costs about ``2 n_samples dim (dim + (2 + train_text)
    n_classes)`` multiply-adds (the map, the cosines with the prototypes, their gradients
    with respect to the mapped images, the map and, with ``train_text``, the prototypes).
    """
    flops = 4 * n_samples * dim * (dim + (2 + train_text) * n_classes)
    return int(np.clip(AUTO_FLOPS // flops, AUTO_MIN_ITER, AUTO_MAX_ITER))
