import numpy as np
import pytest

from sklearn_cmm._math.basic import l2_normalize
from sklearn_cmm.text import CLIP_IMAGENET_TEMPLATES, class_names_of, class_text_features


class HashEncoder:
    """A deterministic fake text encoder: a random vector per distinct string."""

    def __init__(self, dim=6, width=4):
        self.dim, self.width, self.calls = dim, width, []
        self.text_projection = np.random.RandomState(0).randn(width, dim)

    def encode_text_pre_projection(self, texts):
        return np.array(
            [np.random.RandomState(abs(hash(t)) % 2**31).randn(self.width) for t in texts]
        )

    def encode_text(self, texts):
        self.calls.append(list(texts))
        return self.encode_text_pre_projection(texts) @ self.text_projection


def test_clip_templates_are_the_seven():
    assert len(CLIP_IMAGENET_TEMPLATES) == 7
    assert all("{}" in t for t in CLIP_IMAGENET_TEMPLATES)


def test_array_rows_are_normalised():
    T = np.array([[3.0, 4.0], [1.0, 0.0]])
    text = class_text_features(["a", "b"], 2, text_features=T)
    np.testing.assert_allclose(text.prototypes, [[0.6, 0.8], [1.0, 0.0]])
    assert text.pre_projection is None and text.text_projection is None


def test_dict_ensembles_prompts_after_normalisation():
    prompts = np.array([[2.0, 0.0], [0.0, 1.0]])
    text = class_text_features([0, 1], 2, text_features={0: prompts, 1: [0.0, 3.0]})
    manual = l2_normalize(l2_normalize(prompts).mean(axis=0))
    np.testing.assert_allclose(text.prototypes, [manual, [0.0, 1.0]])


def test_no_text_at_all_is_text_free():
    assert class_text_features(["a", "b"], 3, text_encoder=None) is None


def test_encoder_prompts_use_names_and_templates():
    encoder = HashEncoder()
    text = class_text_features(
        [0, 1], 6, class_names={0: "cat", 1: "dog"}, templates=["a {}.", "the {}!"],
        text_encoder=encoder,
    )
    assert encoder.calls == [["a cat.", "the cat!", "a dog.", "the dog!"]]
    expected = l2_normalize(l2_normalize(encoder.encode_text(["a dog.", "the dog!"])).mean(0))
    np.testing.assert_allclose(text.prototypes[1], expected)


def test_dict_missing_labels_are_encoded():
    encoder = HashEncoder()
    text = class_text_features(
        ["cat", "dog"], 6, text_features={"cat": np.ones(6)}, templates=["{}"],
        text_encoder=encoder,
    )
    assert encoder.calls == [["dog"]]
    np.testing.assert_allclose(text.prototypes[0], np.ones(6) / np.sqrt(6))


def test_projection_and_pre_projection_from_encoder():
    encoder = HashEncoder()
    text = class_text_features(
        ["cat", "dog"], 6, templates=["a {}", "b {}"], text_encoder=encoder,
        with_projection=True,
    )
    np.testing.assert_allclose(text.text_projection, encoder.text_projection)
    expected = encoder.encode_text_pre_projection(["a dog", "b dog"]).mean(axis=0)
    np.testing.assert_allclose(text.pre_projection[1], expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"text_features": np.ones((3, 4))}, "shape"),
        ({"text_features": np.ones((2, 5))}, "dimension 5 but X has 4"),
        ({"text_features": np.array([[np.nan] * 4, [1.0] * 4])}, "NaN"),
        ({"text_features": {"a": np.ones(4)}, "text_encoder": None}, "no entry"),
        ({"text_features": {"a": np.ones(4), "b": np.full(4, np.inf)}}, "NaN or infinity"),
        ({"text_encoder": HashEncoder(dim=6)}, "dimension 6 but X has 4"),
    ],
)
def test_errors_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        class_text_features(["a", "b"], 4, **kwargs)


def test_integer_labels_need_names():
    with pytest.raises(ValueError, match="class_names"):
        class_names_of([0, 1], {0: "cat"})
    assert class_names_of(np.array(["x", "y"]), {"y": "why"}) == ["x", "why"]
