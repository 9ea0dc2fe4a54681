"""Cross-Modal Mapping's refinement loss and its gradient by hand, on numpy arrays or
torch tensors.

An evaluation is five products (the mapped shots, their cosines with the prototypes and
three for the gradient) and a few dozen small operations around them. At few-shot sizes
the operations' fixed cost decides the time, so, as SeMoBridge-T's loss
(:mod:`.semobridge_loss`), the gradient is written out rather than left to autograd,
what does not change between evaluations is computed once, and the same code runs on
numpy arrays (the CPU) and torch tensors (a GPU), using only what both spell alike.
"""

import numpy as np

from .semobridge_loss import log_softmax_and_residual
from .unit_rows import unit_rows, unit_rows_grad

#: The most shots per dimension at which ``in_span`` trains in the span of the shots.
#: Beyond it the two products that :meth:`CMMRefinementLoss.entries` adds to each L-BFGS
#: iteration (dim x n x dim each) cost more than the smaller products and parameters
#: save. Default refinements on one core, ``image_weight=0``, span against full
#: (ad-hoc A/B, synthetic problems): 10 x 1 x 512 7 against 26 ms, 100 x 2 x 512 (0.39)
#: 0.26 against 0.38 s, 10 x 25 x 512 (0.49) even, 100 x 3 x 512 (0.59) and
#: 10 x 32 x 512 (0.63) 1.1-1.2x slower.
SPAN_MAX_SHARE = 0.4


def few_enough_for_span(n_samples, dim):
    """Whether ``in_span`` trains the map in the span of ``n_samples`` shots of ``dim``."""
    return n_samples <= SPAN_MAX_SHARE * dim

#: Each shot's own class's cosine while the hardest negative's argmax runs: cosines lie
#: in [-1, 1], so the shot's class then ranks below every other.
_BELOW_ANY_COSINE = -3.0


class CMMRefinementLoss:
    """CMM's training loss on fixed shots, and its gradient by hand.

    With ``W = W0 + Delta`` and ``T = T0 + Delta_T`` (``T0`` alone when the text is not
    trained), ``cos = cos(V W, T)`` and the hardest negative of shot ``i``,
    ``h_i = argmax_{c != y_i} cos[i, c]`` (chosen without gradient),

    ``CE(logit_scale * cos + zero_shot_logits, y)
    + triplet_weight * mean_i max(0, margin - cos[i, y_i] + cos[i, h_i])
    + alpha / 2 * (||Delta||^2 + ||Delta_T||^2)``,

    where ``zero_shot_logits = zero_shot_weight * logit_scale * cos(V, T0)`` is fixed.
    The hinge's gradient at exactly 0 is 0 (autograd's for ``relu``).

    The trained residuals are one array ``P = [Delta; Delta_T]``, shape ``(dim +
    n_classes, dim)``, or ``Delta`` alone: one optimiser serves both. The cosines are
    held classes by shots (``(n_classes, n_samples)``), so that the cross-entropy is
    SeMoBridge-T's column-wise :func:`~.semobridge_loss.log_softmax_and_residual`.

    With few shots (at most ``SPAN_MAX_SHARE`` per dimension), ``in_span`` trains
    ``Delta = Q C`` instead, ``Q`` an orthonormal basis of the span of the shots
    (``V^T = Q R``), ``P = [C; Delta_T]`` of shape ``(n_samples + n_classes, dim)``. The
    gradient of the data terms with respect to ``Delta`` is ``V^T (...)``, in that span,
    and so is every L-BFGS step from ``Delta = 0`` (a combination of gradients and
    earlier steps); ``Q`` keeps lengths and dot products, so L-BFGS on ``C`` takes the
    same steps as on ``Delta`` when its tolerances measure :meth:`entries`. At 10 classes
    x 1 shot x 512-d a twenty-fifth of the parameters, and products with the n x n matrix
    ``V Q`` instead of ``V``. Not for AdamW, whose elementwise steps leave the span.

    Parameters
    ----------
    V : ndarray of shape (n_samples, dim)
        L2-normalised image features.
    y : ndarray of shape (n_samples,), int
        Their class indices.
    W0 : ndarray of shape (dim, dim)
        The map's start (the closed form).
    T0 : ndarray of shape (n_classes, dim)
        The zero-shot text prototypes, L2-normalised.
    backend : object
        Where the loss computes, as :class:`~.semobridge_loss.SeMoBridgeTLoss`'s.
    train_text : bool
        Whether ``P`` holds the prototypes' residual below the map's.
    logit_scale, zero_shot_weight, triplet_weight, margin, alpha : float
        As :class:`~sklearn_cmm.CrossModalMappingClassifier`'s parameters.
    in_span : bool, default=False
        Train the map's residual in the span of the shots when they are at most
        ``SPAN_MAX_SHARE`` per dimension (for L-BFGS only).

    Attributes
    ----------
    shape : tuple of int
        The shape of the trained array ``P``.
    """

    def __init__(self, V, y, W0, T0, *, backend, train_text, logit_scale, zero_shot_weight,
                 triplet_weight, margin, alpha, in_span=False):
        n, dim = V.shape
        # (n_classes, n) arrays are built in float32 and on the backend: at ImageNet scale
        # (1000 x 16,000) a float64 copy or product costs a second
        onehot_T = np.zeros((len(T0), n), dtype=np.float32)
        onehot_T[y, np.arange(n)] = 1.0
        self.dim, self.train_text = dim, train_text
        self.logit_scale, self.triplet_weight = float(logit_scale), float(triplet_weight)
        self.margin, self.alpha = float(margin), float(alpha)
        self.xp, asarray = backend.xp, backend.asarray
        self.V, self.T0, self.column_weights = (
            asarray(a) for a in (V, T0, np.full(n, 1 / n)))
        # The map's residual in the span of the shots, Delta = Q C with Q an orthonormal
        # basis of V^T's columns (n x dim parameters C instead of dim x dim): V Delta =
        # (V Q) C and the gradient of C is Q^T that of Delta, products with the n x n
        # matrix V Q; ||Delta|| = ||C||.
        self.basis = (np.linalg.qr(V.T)[0] if in_span and few_enough_for_span(n, dim)
                      else None)
        self.map_inputs = self.V if self.basis is None else asarray(V @ self.basis)
        self.map_rows = self.map_inputs.shape[1]
        self.shape = (self.map_rows + len(T0) * train_text, dim)
        # The mapped shots V (W0 + Delta): with fewer shots than dimensions as V W0 (fixed,
        # computed once) + V Delta, an (n_samples, dim) addition where W0 + Delta is a
        # (dim, dim) one (a tenth of an evaluation at 10 x 1 x 512); with more, the
        # addition of the two maps is the smaller (at ImageNet scale, 16,000 x 1024, the
        # default fit took 45.7-57.5 s with V W0 against 43.9-49.9 s without).
        if n < dim:
            self.V_W0 = self.V @ asarray(W0)
        else:
            self.V_W0, self.W0 = None, asarray(W0)
            self.W = asarray(np.zeros((dim, dim)))  # W0 + Delta, a work array
        onehot_T = asarray(onehot_T)
        # the column-wise cross-entropy's targets: each shot a column of weight 1 / n
        self.weighted_targets = onehot_T / n
        self.flat_targets = self.weighted_targets.reshape(-1)
        self.zero_shot_logits = (
            (self.T0 @ self.V.T) * (zero_shot_weight * logit_scale) if zero_shot_weight
            else None)
        # the triplet's gradient, +-triplet_weight / n at an active hinge, in P's dtype
        self.triplet_step = asarray(np.array(triplet_weight / n))
        # the triplet's gathers and scatters index the flattened cosines: a third of the
        # cost of two-dimensional indexing at few-shot sizes
        self.n, self.columns = n, backend.asindices(np.arange(n))
        self.own_flat = backend.asindices(np.asarray(y) * n + np.arange(n))
        # Work arrays, reused by every evaluation: at ImageNet scale a fresh (n_classes, n)
        # array costs about as much to map as to fill (the OS zeroes its pages each time).
        # The map's gradient goes to one before it joins the penalty's in a fresh array
        # (the caller keeps each gradient). The mapped shots, above the prototypes when
        # they are trained, share one, normalised in place: one normalisation for both,
        # and one for their gradients. The cosines become the scores in place.
        n_rows = n + len(T0) if train_text else n
        self.rows, self.d_rows, self.d_map, self.cos, self.residual = (
            asarray(np.zeros(shape)) for shape in (
                (n_rows, dim), (n_rows, dim), (self.map_rows, dim), (len(T0), n),
                (len(T0), n)))
        if not train_text:
            self.text, _ = unit_rows(self.T0)
        if self.basis is not None:
            self.basis_on_backend = asarray(self.basis)
            self.full = asarray(np.zeros((dim + len(T0) * train_text, dim)))

    def entries(self, P):
        """``P`` (of :attr:`shape`, or flat) as ``[Delta; Delta_T]``, whose entries
        L-BFGS's tolerances and first step measure: ``P`` itself, or in the span of the
        shots ``Q C`` (in a work array that the next call overwrites)."""
        if self.basis is None:
            return P
        P, k, full = P.reshape(self.shape), self.map_rows, self.full
        self.xp.matmul(self.basis_on_backend, P[:k], out=full[: self.dim])
        full[self.dim:] = P[k:]
        return full

    def residuals(self, P):
        """The trained ``P`` (a float64 numpy array) as ``[Delta; Delta_T]``, float64."""
        if self.basis is None:
            return P
        return np.vstack([self.basis @ P[: self.map_rows], P[self.map_rows:]])

    def value_and_grad(self, P):
        """The loss at ``P`` and its gradient (no autograd).

        Parameters
        ----------
        P : array of shape :attr:`shape`
            ``Delta`` (in the span of the shots ``C``) stacked on ``Delta_T`` when the
            text is trained.

        Returns
        -------
        total, d_P : scalar array, array of ``P``'s shape
            The loss and its gradient.
        """
        k, n = self.map_rows, self.n
        rows = self.rows
        if self.V_W0 is not None:
            self.xp.matmul(self.map_inputs, P[:k], out=rows[:n])
            rows[:n] += self.V_W0
        else:
            self.xp.add(self.W0, P[:k], out=self.W)
            self.xp.matmul(self.V, self.W, out=rows[:n])
        if self.train_text:
            self.xp.add(self.T0, P[k:], out=rows[n:])
        units, norms = unit_rows(rows, out=rows)
        mapped = units[:n]
        text = units[n:] if self.train_text else self.text
        cos = self.xp.matmul(text, mapped.T, out=self.cos)  # classes by shots
        if self.triplet_weight:  # the hinges, before the cosines become the scores
            cos_flat = cos.reshape(-1)
            own = cos_flat.take(self.own_flat)
            cos_flat[self.own_flat] = _BELOW_ANY_COSINE
            negatives_flat = cos.argmax(axis=0) * n + self.columns
            hinge = self.margin - own + cos_flat.take(negatives_flat)
            cos_flat[self.own_flat] = own
        scores = cos
        scores *= self.logit_scale
        if self.zero_shot_logits is not None:
            scores += self.zero_shot_logits
        log_p, d_cos = log_softmax_and_residual(scores, self.weighted_targets,
                                                self.column_weights, out=self.residual)
        total = -(log_p.reshape(-1) @ self.flat_targets)
        d_cos *= self.logit_scale
        if self.triplet_weight:
            d_cos_flat = d_cos.reshape(-1)
            step = (hinge > 0) * self.triplet_step
            total = total + hinge @ step  # triplet_weight * mean(max(hinge, 0))
            d_cos_flat[self.own_flat] -= step
            d_cos_flat[negatives_flat] += step
        d_P = P * self.alpha  # the penalty's gradient, and an array of P's shape
        d_rows = self.d_rows
        self.xp.matmul(d_cos.T, text, out=d_rows[:n])
        if self.train_text:
            self.xp.matmul(d_cos, mapped, out=d_rows[n:])
        d_rows = unit_rows_grad(units, norms, d_rows)
        if self.train_text:
            d_P[k:] += d_rows[n:]
        self.xp.matmul(self.map_inputs.T, d_rows[:n], out=self.d_map)
        d_P[:k] += self.d_map
        if self.alpha:
            flat = P.reshape(-1)
            total = total + (self.alpha / 2) * (flat @ flat)
        return total, d_P
