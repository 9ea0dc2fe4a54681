"""Augmented views: crop boxes, views and their generators against plain references."""

import math

import numpy as np
import pytest
from PIL import Image

from sklearn_cmm._augment import (
    CROP_RATIO,
    CROP_SCALE,
    augmented_view,
    random_crop_box,
    view_generators,
    view_size,
)


def _photo(width=60, height=40, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(200, 150), (150, 200), (37, 51)])
def test_crop_boxes_lie_in_the_image_with_the_allowed_area_and_ratio(size):
    width, height = size
    for seed in range(200):
        left, upper, right, lower = random_crop_box(width, height, np.random.default_rng(seed))
        assert 0 <= left < right <= width and 0 <= upper < lower <= height
        w, h = right - left, lower - upper
        # Rounding each side by up to half a pixel moves area and ratio a little.
        slack = (1 + 1 / w) * (1 + 1 / h)
        assert CROP_SCALE[0] / slack <= w * h / (width * height) <= CROP_SCALE[1] * slack
        assert CROP_RATIO[0] / slack <= w / h <= CROP_RATIO[1] * slack


def test_crop_boxes_vary_over_the_allowed_range():
    boxes = [random_crop_box(200, 200, np.random.default_rng(seed)) for seed in range(300)]
    areas = [(r - l) * (b - u) / 200**2 for l, u, r, b in boxes]
    assert min(areas) < 0.55 and max(areas) > 0.95
    assert len({(l, u) for l, u, _, _ in boxes}) > 100


@pytest.mark.parametrize("width, height, expected", [
    # Too thin for any box of half its area and an allowed ratio: the largest central
    # box of the nearest allowed ratio (3/4 wide, 4/3 tall).
    (10, 100, (0, 43, 10, 56)),
    (100, 10, (43, 0, 56, 10)),
])
def test_crop_box_falls_back_to_the_central_box(width, height, expected):
    assert random_crop_box(width, height, np.random.default_rng(0)) == expected


@pytest.mark.parametrize("size, limit, expected", [
    ((90, 64), 64, (90, 64)), ((90, 65), 64, (89, 64)), ((4032, 3024), 448, (597, 448)),
    ((3024, 4032), 448, (448, 597)), ((5, 2000), 1, (1, 400)), ((90, 65), None, (90, 65)),
])
def test_view_size_scales_the_shorter_side_down_to_the_limit(size, limit, expected):
    assert view_size(size, limit) == expected


def test_crop_flip_views_take_the_limited_size_flips_the_whole_image():
    image = _photo(120, 80)
    assert min(image.size) > 50
    view = augmented_view(image, "crop_flip", np.random.default_rng(0), max_short_side=50)
    assert view.size == view_size(image.size, 50) and min(view.size) == 50
    assert augmented_view(image, "flip", np.random.default_rng(0), 50).size == image.size


def test_view_generators_of_a_later_part_are_those_of_the_whole_list():
    whole = [[g.random() for g in row] for row in view_generators(3, 5, 2)]
    part = [[g.random() for g in row] for row in view_generators(3, 3, 2, first_image=2)]
    assert part == whole[2:]


def test_flip_is_the_mirror_image():
    image = _photo()
    np.testing.assert_array_equal(
        np.asarray(augmented_view(image, "flip", np.random.default_rng(0))),
        np.asarray(image)[:, ::-1],
    )


def test_crop_flip_is_a_resized_crop_mirrored_half_the_time():
    image = _photo()
    flipped = 0
    for seed in range(40):
        view = np.asarray(augmented_view(image, "crop_flip", np.random.default_rng(seed)))
        rng = np.random.default_rng(seed)  # the same draws, by hand
        left, upper, right, lower = random_crop_box(image.width, image.height, rng)
        crop = Image.fromarray(np.asarray(image)[upper:lower, left:right])
        crop = np.asarray(crop.resize(image.size, Image.Resampling.BICUBIC))
        mirror = rng.random() < 0.5
        flipped += mirror
        np.testing.assert_array_equal(view, crop[:, ::-1] if mirror else crop)
    assert 10 < flipped < 30


def test_a_callable_augmentation_gets_the_image_and_the_generator():
    image, rng = _photo(), np.random.default_rng(0)
    seen = []

    def rotate(img, generator):
        seen.append((img, generator))
        return img.rotate(90).convert("L")

    view = augmented_view(image, rotate, rng)
    assert seen == [(image, rng)] and view.mode == "RGB"
    with pytest.raises(TypeError, match="must return a PIL image"):
        augmented_view(image, lambda img, generator: np.asarray(img), rng)


@pytest.mark.parametrize("random_state", [0, np.random.RandomState(0)])
def test_view_generators_depend_on_the_seed_and_the_place_only(random_state):
    def draws(state):
        return np.array([[g.random() for g in row] for row in view_generators(state, 3, 2)])

    first = draws(random_state if isinstance(random_state, int) else np.random.RandomState(0))
    np.testing.assert_array_equal(first, draws(0))
    assert len(np.unique(first)) == 6  # every view its own stream
    assert not np.array_equal(first, draws(1))
    # A generator's stream depends on its place, not on how many views there are.
    assert math.isclose(view_generators(0, 3, 2)[0][0].random(), first[0, 0])
