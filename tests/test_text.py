import numpy as np
import pytest

from sklearn_cmm._math.basic import l2_normalize
from sklearn_cmm import CLIPEmbeddings, CLIPTextEncoder
from sklearn_cmm.text import (
    CLIP_IMAGENET_TEMPLATES,
    check_templates,
    class_names_of,
    class_text_features,
    ensemble_prompts,
    resolve_text_encoder,
)


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


class ShortEncoder:
    """Returns ``drop`` rows fewer than asked for (more when negative)."""

    def __init__(self, drop):
        self.drop = drop

    def encode_text(self, texts):
        return np.ones((len(texts) - self.drop, 4))


class ZeroEncoder:
    def encode_text(self, texts):
        return np.zeros((len(texts), 4))


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


@pytest.mark.parametrize("text_features, encoded", [
    (np.ones((2, 6)), []),
    ({0: np.ones(6)}, [["a dog"]]),
])
def test_given_text_takes_only_the_projection_from_the_encoder(text_features, encoded):
    # Given prototypes have no pre-projection features (and integer labels no names to
    # encode them by): SeMoBridge-T then takes their preimage under the projection.
    encoder = HashEncoder()
    text = class_text_features(
        [0, 1], 6, text_features=text_features, class_names={1: "dog"}, templates=["a {}"],
        text_encoder=encoder, with_projection=True,
    )
    assert encoder.calls == encoded and text.pre_projection is None
    np.testing.assert_array_equal(text.text_projection, encoder.text_projection)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"text_features": np.ones((3, 4))}, "shape"),
        ({"text_features": np.ones((2, 5))}, "dimension 5 but X has 4"),
        ({"text_features": np.array([[np.nan] * 4, [1.0] * 4])}, "NaN"),
        ({"text_features": {"a": np.ones(4)}, "text_encoder": None}, "no entry"),
        ({"text_features": {"a": np.ones(4), "b": np.full(4, np.inf)}}, "NaN or infinity"),
        ({"text_encoder": HashEncoder(dim=6)}, "dimension 6 but X has 4"),
        ({"text_features": {"0": np.ones(4), "1": np.ones(4)}}, "No key of text_features matches"),
        ({"text_features": {}}, "No key of text_features matches"),
        ({"text_features": np.array([[1.0, 0, 0, 0], [0.0] * 4])}, "all-zero rows \\[1\\]"),
        ({"text_features": {"a": [[1.0, 0, 0, 0], [0.0] * 4]}}, "all-zero rows \\[1\\]"),
        ({"text_encoder": ShortEncoder(drop=1)}, "returned shape \\(3, 4\\) for 4 prompts"),
        ({"text_encoder": ShortEncoder(drop=-1)}, "returned shape \\(5, 4\\) for 4 prompts"),
        ({"text_encoder": ZeroEncoder()}, "all-zero rows \\[0, 1, 2, 3\\]"),
        ({"text_features": np.ones((2, 4)), "text_classes": ["a"]}, "one label per row"),
        ({"text_features": np.ones((2, 4)), "text_classes": ["a", "a"]}, "repeated labels"),
        ({"text_features": np.ones((2, 4)), "text_classes": ["a", "c"]}, "\\['b'\\] of y are not in classes"),
        ({"text_classes": ["a", "b"]}, "cannot be used without"),
    ],
)
def test_errors_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        class_text_features(["a", "b"], 4, templates=["{}", "a {}"], **kwargs)


def test_integer_labels_need_names():
    with pytest.raises(ValueError, match="class_names"):
        class_names_of([0, 1], {0: "cat"})
    assert class_names_of(np.array(["x", "y"]), {"y": "why"}) == ["x", "why"]


@pytest.mark.parametrize(
    "templates, match",
    [
        ([], "empty"),
        ("a {}", "not one string"),
        (["a photo"], "'a photo' must have exactly one '\\{\\}' slot.*0 slot"),
        (["{} and {}"], "exactly one.*2 slot"),
        (["a {x}"], "exactly one.*\\['x'\\]"),
        (["a {0}"], "exactly one.*\\['0'\\]"),
        (["a {"], "not a valid format string"),
        ([3], "must be strings"),
    ],
)
def test_bad_templates_are_named(templates, match):
    with pytest.raises(ValueError, match=match):
        check_templates(templates)
    with pytest.raises(ValueError, match=match):
        class_text_features(["a", "b"], 4, text_features=np.ones((2, 4)), templates=templates)


def test_good_templates_pass():
    assert check_templates(("a {}.", "{:>3}!")) == ["a {}.", "{:>3}!"]


def test_classes_pick_the_rows_of_the_fitted_labels():
    T = np.arange(12, dtype=float).reshape(3, 4) + 1
    text = class_text_features(["c", "a"], 4, text_features=T, text_classes=["a", "b", "c"])
    np.testing.assert_allclose(text.prototypes, l2_normalize(T[[2, 0]]))
    text = class_text_features(np.array([2, 0]), 4, text_features=T, text_classes=np.array([0, 1, 2]))
    np.testing.assert_allclose(text.prototypes, l2_normalize(T[[2, 0]]))


def test_dict_with_some_keys_of_other_classes_is_fine():
    # A fold that lacks class "c" still gets the rows of the classes it has.
    text = class_text_features(
        ["a", "b"], 2, text_features={"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0]}
    )
    np.testing.assert_allclose(text.prototypes, np.eye(2))


def test_ensemble_prompts_is_the_normalised_mean_of_normalised_rows():
    prompts = np.array([[3.0, 4.0], [0.0, 2.0]])
    expected = np.array([0.3, 0.9]) / np.linalg.norm([0.3, 0.9])
    np.testing.assert_allclose(ensemble_prompts(prompts), expected)


def test_clip_means_the_default_model_and_nothing_else():
    assert resolve_text_encoder("clip") == CLIPTextEncoder()
    assert resolve_text_encoder("clip") == CLIPTextEncoder("ViT-B-16", pretrained="openai")
    encoder = HashEncoder()
    assert resolve_text_encoder(encoder) is encoder


def test_text_from_another_model_than_the_images_is_refused():
    recorded = CLIPTextEncoder("sklearn-cmm-fashion-tiny", pretrained="bundled")
    X = CLIPEmbeddings(np.ones((2, 64), dtype=np.float32), recorded)
    with pytest.raises(ValueError, match="X was embedded by CLIP model 'sklearn-cmm-fashion-tiny'.*"
                       "text_encoder='clip' is CLIPTextEncoder\\(\\).*make_clip_pipeline"):
        class_text_features(["a", "b"], 64, text_encoder="clip", recorded_encoder=X.text_encoder)
    with pytest.raises(ValueError, match="X was embedded by"):
        class_text_features(
            ["a", "b"], 64, text_encoder=CLIPTextEncoder("sklearn-cmm-fashion-tiny", pretrained=None),
            recorded_encoder=recorded,
        )
    # The same model (device and precision aside) and custom encoders are not refused.
    same = CLIPTextEncoder("sklearn-cmm-fashion-tiny", pretrained="bundled", device="cpu", precision="fp32")
    assert class_text_features(["a", "b"], 64, text_encoder=same, recorded_encoder=recorded) is not None
    class_text_features(["a", "b"], 6, text_encoder=HashEncoder(), recorded_encoder=recorded)
