"""CLIPEmbeddings: image embeddings that remember which CLIP model made them.

:class:`~sklearn_cmm.CLIPFeaturizer` returns them, so that a classifier can refuse text
from another model than the one that embedded its images (see :mod:`sklearn_cmm.text`).
The record is only ever used for that check: what a classifier computes comes from its
parameters, so an embedding array that lost its record (saved and loaded, converted with
``np.asarray``, cached by ``Pipeline(memory=...)``) gives the same result, unchecked.
"""

import numpy as np


class CLIPEmbeddings(np.ndarray):
    """A numpy array of image embeddings with the text encoder of their CLIP model.

    It behaves as the ``ndarray`` it is; slices and arithmetic keep the record, and it
    survives pickling (joblib workers, Dask, Ray). ``np.asarray(X)`` gives a plain array.

    Parameters
    ----------
    array : array-like of shape (n_samples, n_features)
        The embeddings (viewed, not copied, where they are an ndarray).
    text_encoder : CLIPTextEncoder or None, default=None
        The text side of the model and weights that made them.
    views : tuple of (int, int) or None, default=None
        ``(n_views, dim)`` of embeddings side by side in a row, as below.

    Attributes
    ----------
    text_encoder : CLIPTextEncoder or None
        The text side of the model and weights that made the embeddings.
    views : tuple of (int, int) or None
        ``(n_views, dim)`` when each row holds ``n_views`` embeddings of dimension
        ``dim`` side by side (``CLIPFeaturizer(view_output="columns")``), else None.
    """

    def __new__(cls, array, text_encoder=None, views=None):
        # text_encoder is optional for loaders that rebuild the array as cls(array) (skops).
        embeddings = np.asarray(array).view(cls)
        embeddings.text_encoder = text_encoder
        embeddings.views = views
        return embeddings

    def __array_finalize__(self, obj):
        self.text_encoder = getattr(obj, "text_encoder", None)
        self.views = getattr(obj, "views", None)

    def __reduce__(self):
        rebuild, args, state = super().__reduce__()
        return rebuild, args, (state, self.text_encoder, self.views)

    def __setstate__(self, state):
        # Pickles of versions before the views record hold (array state, text encoder).
        array_state, self.text_encoder, *views = state
        self.views = views[0] if views else None
        super().__setstate__(array_state)


def recorded_views(X):
    """The embeddings per row recorded on ``X`` by a CLIPFeaturizer, or None.

    None also when ``X``'s columns no longer match the record (a slice of the columns).
    """
    views = getattr(X, "views", None) if isinstance(X, CLIPEmbeddings) else None
    if views is None or np.ndim(X) != 2 or np.shape(X)[1] != views[0] * views[1]:
        return None
    return views[0]


def recorded_text_encoder(X):
    """The text encoder recorded on ``X`` by a CLIPFeaturizer, or None."""
    return getattr(X, "text_encoder", None) if isinstance(X, CLIPEmbeddings) else None
