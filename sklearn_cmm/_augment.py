"""Augmented views of training images: random resized crops and horizontal flips.

The few-shot methods' authors train on augmented copies of the shots (Tip-Adapter
averages each image's views into one cache key; SeMoBridge-T appends them as extra
shots). :class:`~sklearn_cmm.CLIPFeaturizer` draws them here, before the model's own
preprocessing, from a numpy generator per view so that the draws do not depend on
which decoding thread prepares which image.
"""

import math

import numpy as np
from PIL import Image
from sklearn.utils import check_random_state

#: Fraction of the image's area a random crop keeps, and the range of its aspect ratio
#: (width / height): the crops of Tip-Adapter's and CoOp's few-shot training.
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
#: Draws of a crop box before falling back to the largest central box of an allowed ratio.
_CROP_ATTEMPTS = 10

AUGMENTATIONS = ("crop_flip", "flip")


def random_crop_box(width, height, rng, scale=CROP_SCALE, ratio=CROP_RATIO):
    """A random box ``(left, upper, right, lower)`` of ``scale`` of the area and ``ratio``.

    Area fraction and log aspect ratio are drawn uniformly; a box that does not fit the
    image is drawn again, and after ``_CROP_ATTEMPTS`` misses the box is the largest
    central one whose aspect ratio lies in ``ratio``.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(_CROP_ATTEMPTS):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            upper = int(rng.integers(0, height - h + 1))
            return left, upper, left + w, upper + h
    aspect = min(max(width / height, ratio[0]), ratio[1])
    w, h = (width, round(width / aspect)) if width / height <= aspect else (
        round(height * aspect), height)
    left, upper = (width - w) // 2, (height - h) // 2
    return left, upper, left + w, upper + h


def view_size(size, max_short_side):
    """``size`` (width, height) scaled down to a shorter side of ``max_short_side``, or
    as it is when its shorter side is no longer (or ``max_short_side`` is None)."""
    if max_short_side is None or min(size) <= max_short_side:
        return size
    scale = max_short_side / min(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def augmented_view(image, augmentation, rng, max_short_side=None):
    """One augmented view of an RGB PIL ``image``.

    ``"flip"`` is the mirror image; ``"crop_flip"`` a random resized crop
    (:func:`random_crop_box`, resized to the image's size, scaled down to a shorter side
    of ``max_short_side``: :func:`view_size`) mirrored with probability 1/2; a callable
    is called as ``augmentation(image, rng)`` and must return a PIL image.
    """
    if callable(augmentation):
        view = augmentation(image, rng)
        if not isinstance(view, Image.Image):
            raise TypeError(
                f"augmentation returned a {type(view).__name__}; it must return a PIL image."
            )
        return view.convert("RGB")
    if augmentation == "flip":
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    box = random_crop_box(image.width, image.height, rng)
    view = image.crop(box).resize(view_size(image.size, max_short_side),
                                  Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return view


def view_generators(random_state, n_images, n_views, first_image=0):
    """``(n_images, n_views)`` independent numpy generators, one per view, from one seed.

    ``random_state`` is an int, a RandomState or None (as scikit-learn's); the same
    value gives the same generators, so a view depends only on it and the view's place:
    view ``k`` of image ``i`` draws from the child ``first_image * n_views + i * n_views +
    k`` of the seed's ``SeedSequence``, so that images ``first_image ..`` of a longer list
    (a shard) get the views they get in the whole list.
    """
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    first = first_image * n_views
    children = [np.random.SeedSequence(seed, spawn_key=(first + j,))  # spawn()'s children
                for j in range(n_images * n_views)]
    return [[np.random.default_rng(children[i * n_views + k]) for k in range(n_views)]
            for i in range(n_images)]
