"""CLIPFeaturizer: same embeddings as open_clip, every input kind, errors, sklearn API."""

import pickle
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline

from sklearn_cmm import featurizer as featurizer_module
from sklearn_cmm import make_clip_pipeline
from sklearn_cmm._clip import model as clip_model
from sklearn_cmm._clip.text_encoder import CLIPTextEncoder
from sklearn_cmm.featurizer import CLIPFeaturizer

from ._tiny_clip import reference_features


@pytest.fixture(scope="module")
def reference(tiny_clip):
    """The tiny model loaded by open_clip itself, and its preprocessing."""
    model = open_clip.create_model(tiny_clip.name, pretrained=str(tiny_clip.checkpoint))
    return model.eval(), open_clip.image_transform(tiny_clip.image_size, is_train=False)


@pytest.fixture
def featurizer(tiny_clip):
    return CLIPFeaturizer(tiny_clip.name, pretrained=tiny_clip.checkpoint, batch_size=4)


def _expected(reference, images, normalize=True):
    model, preprocess = reference
    return reference_features(model, images, preprocess, normalize=normalize)


def _arrays(n, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    shape = (37, 51) if channels is None else (37, 51, channels)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


# --- same embeddings as open_clip --------------------------------------------------------


def test_paths_match_open_clip(featurizer, reference, image_files):
    X = featurizer.fit_transform(image_files.paths)
    assert X.shape == (12, 32) and X.dtype == np.float32
    expected = _expected(reference, [Image.open(p) for p in image_files.paths])
    np.testing.assert_allclose(X, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, rtol=1e-5)
    # str paths, a pandas Series and a one-column DataFrame give the same rows.
    as_str = [str(p) for p in image_files.paths]
    np.testing.assert_array_equal(featurizer.transform(as_str), X)
    np.testing.assert_array_equal(featurizer.transform(pd.Series(as_str)), X)
    np.testing.assert_array_equal(featurizer.transform(pd.DataFrame({"path": as_str})), X)
    np.testing.assert_array_equal(featurizer.transform(np.array(as_str)), X)


def test_pil_images_and_arrays_match_open_clip(featurizer, reference):
    arrays = _arrays(5)
    images = [Image.fromarray(a) for a in arrays]
    expected = _expected(reference, images)
    featurizer.fit(None)
    np.testing.assert_allclose(featurizer.transform(images), expected, atol=1e-5)
    np.testing.assert_allclose(featurizer.transform(arrays), expected, atol=1e-5)
    np.testing.assert_allclose(featurizer.transform(np.stack(arrays)), expected, atol=1e-5)
    mixed = [images[0], arrays[1], images[2], arrays[3], images[4]]
    np.testing.assert_allclose(featurizer.transform(mixed), expected, atol=1e-5)


@pytest.mark.parametrize("channels", [None, 1, 4])
def test_grayscale_and_rgba_are_converted_to_rgb(featurizer, reference, channels):
    arrays = _arrays(3, seed=1, channels=channels)
    rgb = [Image.fromarray(np.squeeze(a)).convert("RGB") for a in arrays]
    expected = _expected(reference, rgb)
    featurizer.fit(None)
    np.testing.assert_allclose(featurizer.transform(arrays), expected, atol=1e-5)
    np.testing.assert_allclose(featurizer.transform(np.stack(arrays)), expected, atol=1e-5)
    modes = {None: "L", 1: "L", 4: "RGBA"}
    pil = [Image.fromarray(np.squeeze(a), modes[channels]) for a in arrays]
    np.testing.assert_allclose(featurizer.transform(pil), expected, atol=1e-5)


def test_grayscale_and_rgba_files(featurizer, reference, tmp_path):
    paths, rgb = [], []
    for i, (array, suffix) in enumerate([(_arrays(1, 2, None)[0], ".jpg"), (_arrays(1, 3, 4)[0], ".png")]):
        image = Image.fromarray(array)
        paths.append(tmp_path / f"image{i}{suffix}")
        image.save(paths[-1])
        rgb.append(Image.open(paths[-1]).convert("RGB"))
    X = featurizer.fit(None).transform(paths)
    np.testing.assert_allclose(X, _expected(reference, rgb), atol=1e-5)


def test_unnormalized_embeddings(tiny_clip, reference):
    images = [Image.fromarray(a) for a in _arrays(3)]
    featurizer = CLIPFeaturizer(tiny_clip.name, pretrained=tiny_clip.checkpoint, normalize=False)
    X = featurizer.fit_transform(images)
    np.testing.assert_allclose(X, _expected(reference, images, normalize=False), atol=1e-5)


@pytest.mark.parametrize("batch_size, num_workers", [(1, 0), (3, 0), (3, 2), (64, 1), (5, None)])
def test_batching_and_threads_keep_the_order(featurizer, image_files, batch_size, num_workers):
    expected = featurizer.fit_transform(image_files.paths)
    featurizer.set_params(batch_size=batch_size, num_workers=num_workers)
    np.testing.assert_allclose(featurizer.transform(image_files.paths), expected, atol=1e-6)


# --- errors ------------------------------------------------------------------------------


def test_missing_and_corrupt_files_are_errors_naming_the_file(featurizer, image_files, tmp_path):
    featurizer.fit(None)
    missing = tmp_path / "missing.jpg"
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not a JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(image_files.paths[0]).read_bytes()[:300])
    for bad in (missing, corrupt, truncated):
        X = list(image_files.paths[:7]) + [bad] + list(image_files.paths[7:])
        with pytest.raises(ValueError, match=f"Cannot read image file '{bad}'"):
            featurizer.transform(X)
    featurizer.set_params(num_workers=0)
    with pytest.raises(ValueError, match="Cannot read image file .*missing.jpg"):
        featurizer.transform([missing])


@pytest.mark.parametrize(
    "X, message",
    [
        ("image.jpg", "got a single str. Wrap it in a list"),
        (Image.new("RGB", (8, 8)), "got a single Image"),
        ([], "no image"),
        ([np.zeros((8, 8, 3))], "must be uint8"),
        ([np.zeros((8, 8, 2), np.uint8)], "shape \\(H, W\\)"),
        ([3], "X\\[0\\] is a int"),
        (np.zeros((8, 8), np.uint8), "shape \\(n_images, H, W\\)"),
        (np.array([["a.jpg", "b.jpg"]]), "paths must be 1-D"),
        (pd.DataFrame({"a": ["x"], "b": ["y"]}), "one column"),
        (42, "sequence of images; got int"),
    ],
)
def test_bad_inputs(featurizer, X, message):
    featurizer.fit(None)
    with pytest.raises(ValueError, match=message):
        featurizer.transform(X)


def test_transform_before_fit(featurizer):
    with pytest.raises(NotFittedError):
        featurizer.transform(_arrays(1))


@pytest.mark.parametrize(
    "params", [{"batch_size": 0}, {"precision": "fp8"}, {"num_workers": -1}, {"model": 3}]
)
def test_invalid_parameters(featurizer, params):
    with pytest.raises(ValueError, match="parameter"):
        featurizer.set_params(**params).fit(None)


# --- scikit-learn API --------------------------------------------------------------------


def test_init_and_clone_load_nothing(tiny_clip, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("model loaded")

    monkeypatch.setattr(clip_model, "load_model", fail)
    featurizer = CLIPFeaturizer(tiny_clip.name, pretrained=tiny_clip.checkpoint, batch_size=8)
    copy = clone(featurizer)
    assert copy.get_params() == featurizer.get_params()
    assert copy.set_params(batch_size=16).batch_size == 16


def test_pickle_drops_the_weights_and_reloads_them(featurizer, image_files):
    X = featurizer.fit_transform(image_files.paths)
    data = pickle.dumps(featurizer)
    assert len(data) < 5000
    clip_model.clear_model_cache()
    restored = pickle.loads(data)
    np.testing.assert_array_equal(restored.transform(image_files.paths), X)


def test_fitted_attributes(featurizer, tiny_clip):
    featurizer.fit(None)
    assert featurizer.embed_dim_ == 32
    assert featurizer.image_size_ == (32, 32)
    assert featurizer.preprocess_cfg_["mean"] == open_clip.OPENAI_DATASET_MEAN
    assert featurizer.text_encoder() == CLIPTextEncoder(tiny_clip.name, tiny_clip.checkpoint)


def test_feature_names_and_pandas_output(featurizer, image_files):
    featurizer.fit(None)
    names = featurizer.get_feature_names_out()
    assert list(names[:2]) == ["clipfeaturizer0", "clipfeaturizer1"] and len(names) == 32
    index = pd.Index([f"img{i}" for i in range(12)])
    frame = featurizer.set_output(transform="pandas").transform(pd.Series(image_files.paths, index=index))
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(names) and frame.index.equals(index)


def test_verbose_shows_a_progress_bar(featurizer, image_files, capsys):
    featurizer.set_params(verbose=True).fit(None).transform(image_files.paths)
    assert "CLIP features" in capsys.readouterr().err


def test_sklearn_tags(featurizer):
    tags = featurizer.__sklearn_tags__()
    assert not tags.input_tags.two_d_array
    assert tags.input_tags.string and tags.requires_fit


# --- with the classifiers ----------------------------------------------------------------


def test_pipeline_with_cross_modal_mapping_on_image_files(tiny_clip, image_files):
    from sklearn_cmm.cmm import CrossModalMappingClassifier

    pipe = make_clip_pipeline(
        CLIPFeaturizer(model=tiny_clip.name, pretrained=tiny_clip.checkpoint),
        CrossModalMappingClassifier(),
    )
    pipe.fit(image_files.paths, image_files.labels)
    assert pipe[-1].prototype_source_ == "text"
    # The pipeline's prediction is the classifier's on the featurizer's output.
    X = pipe[0].transform(image_files.paths)
    np.testing.assert_array_equal(pipe.predict(image_files.paths), pipe[-1].predict(X))


def test_pipeline_with_semobridge_gets_the_text_projection(tiny_clip, image_files):
    from sklearn_cmm.semobridge import SeMoBridgeClassifier

    pipe = make_clip_pipeline(
        CLIPFeaturizer(model=tiny_clip.config_path, pretrained=tiny_clip.checkpoint),
        SeMoBridgeClassifier(),
    )
    pipe.fit(image_files.paths, image_files.labels)
    encoder = CLIPTextEncoder(tiny_clip.name, tiny_clip.checkpoint)
    np.testing.assert_allclose(pipe[-1].text_projection_, encoder.text_projection, atol=1e-6)


def test_classifier_text_comes_from_the_featurizer_model(tiny_clip, image_files):
    from sklearn_cmm.baselines import ZeroShotClassifier

    pipe = make_clip_pipeline(
        CLIPFeaturizer(tiny_clip.name, pretrained=tiny_clip.checkpoint), ZeroShotClassifier()
    ).fit(image_files.paths, image_files.labels)
    encoder = CLIPTextEncoder(tiny_clip.name, tiny_clip.checkpoint)
    prompts = [t.format("temple") for t in pipe[-1].templates]
    text = encoder.encode_text(prompts)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    prototype = text.mean(axis=0) / np.linalg.norm(text.mean(axis=0))
    np.testing.assert_allclose(pipe[-1].prototypes_[list(pipe[-1].classes_).index("temple")], prototype, atol=1e-5)


def _grid_search(tiny_clip, image_files, memory):
    from sklearn_cmm.baselines import ZeroShotClassifier

    pipe = Pipeline(
        [
            ("clip", CLIPFeaturizer(tiny_clip.name, pretrained=tiny_clip.checkpoint)),
            ("clf", ZeroShotClassifier(text_encoder=CLIPTextEncoder(tiny_clip.name, tiny_clip.checkpoint))),
        ],
        memory=memory,
    )
    search = GridSearchCV(pipe, {"clf__logit_scale": [10.0, 100.0]}, cv=2, scoring="neg_log_loss")
    return search.fit(image_files.paths, image_files.labels)


def test_grid_search_caches_the_featurizer_and_loads_one_model(tiny_clip, image_files, tmp_path, monkeypatch):
    clip_model.clear_model_cache()
    loads, featurizations = [], []
    create, prepared_batches = open_clip.create_model, featurizer_module._prepared_batches
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: loads.append(a[0]) or create(*a, **k))
    monkeypatch.setattr(
        featurizer_module,
        "_prepared_batches",
        lambda *a, **k: featurizations.append(1) or prepared_batches(*a, **k),
    )
    cached = _grid_search(tiny_clip, image_files, memory=str(tmp_path / "cache"))
    with_memory = len(featurizations)
    uncached = _grid_search(tiny_clip, image_files, memory=None)
    assert with_memory < len(featurizations) - with_memory
    assert loads == [tiny_clip.name]  # featurizer and text encoder share one model
    assert cached.best_params_ == uncached.best_params_
    np.testing.assert_allclose(cached.cv_results_["mean_test_score"], uncached.cv_results_["mean_test_score"])


def test_float_precision_choices_run_on_cpu(tiny_clip, image_files):
    exact = CLIPFeaturizer(tiny_clip.name, pretrained=tiny_clip.checkpoint).fit_transform(image_files.paths)
    mixed = CLIPFeaturizer(tiny_clip.name, pretrained=tiny_clip.checkpoint, precision="bf16").fit_transform(
        image_files.paths
    )
    assert mixed.dtype == np.float32
    assert np.min(np.sum(exact * mixed, axis=1)) > 0.99


def test_the_model_is_shared_not_copied(featurizer, tiny_clip):
    featurizer.fit(None)
    loaded = clip_model.load_model(tiny_clip.name, tiny_clip.checkpoint)
    assert not any(isinstance(v, (torch.nn.Module, clip_model.LoadedModel)) for v in vars(featurizer).values())
    assert loaded is clip_model.load_model(tiny_clip.config_path, tiny_clip.checkpoint, device="cpu")
