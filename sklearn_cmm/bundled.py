"""The model and images shipped with the package, for offline use and the demo.

``sklearn-cmm-fashion-tiny`` is a small CLIP-style model the project trained itself on
Fashion-MNIST (``tools/train_tiny_clip.py``; see the docs' "Bundled model" page). It loads
through the same open_clip code as any local checkpoint::

    CLIPFeaturizer(model=BUNDLED_MODEL, pretrained="bundled")
"""

from importlib import resources

import numpy as np
from sklearn.utils import Bunch

#: Name of the bundled model: an open_clip config and weights in ``sklearn_cmm/_bundled``.
BUNDLED_MODEL = "sklearn-cmm-fashion-tiny"


def load_fashion_mnist_sample():
    """Held-out Fashion-MNIST test images shipped with the package.

    A class-balanced subset of the official Fashion-MNIST test split (never seen while
    training the bundled model). Fashion-MNIST is (c) Zalando SE, MIT licence
    (``sklearn_cmm/_bundled/DATA_LICENSE.md``).

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``images`` uint8 ndarray of shape (n_images, 28, 28), ``target`` int ndarray of
        shape (n_images,), ``target_names`` the readable class names the bundled model's
        zero-shot prompts use, ``templates`` those prompts' templates.

    References
    ----------
    .. [1] H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
       Benchmarking Machine Learning Algorithms", arXiv:1708.07747, 2017.

    Examples
    --------
    >>> from sklearn_cmm.bundled import load_fashion_mnist_sample
    >>> data = load_fashion_mnist_sample()
    >>> data.images.shape[1:], len(data.target_names)
    ((28, 28), 10)
    """
    path = resources.files("sklearn_cmm") / "_bundled" / "fashion_mnist_test.npz"
    with resources.as_file(path) as file, np.load(file) as npz:
        return Bunch(
            images=npz["images"],
            target=npz["labels"].astype(np.int64),
            target_names=[str(name) for name in npz["class_names"]],
            templates=[str(t) for t in npz["templates"]],
        )
