"""CLIPFeaturizer: same embeddings as open_clip, every input kind, errors, sklearn API."""

import pickle
import time
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sklearn_cmm import featurizer as featurizer_module
from sklearn_cmm import make_clip_pipeline
from sklearn_cmm._augment import augmented_view, view_generators
from sklearn_cmm._clip import model as clip_model
from sklearn_cmm._clip.text_encoder import CLIPTextEncoder
from sklearn_cmm.featurizer import CLIPFeaturizer

from ._tiny_clip import TINY_CONFIG, reference_features


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


# --- augmented views ---------------------------------------------------------------------


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_no_views_fit_transform_is_transform(featurizer, image_files):
    np.testing.assert_array_equal(
        featurizer.fit_transform(image_files.paths), featurizer.transform(image_files.paths)
    )


def test_a_flip_view_is_averaged_with_the_image(featurizer, reference):
    images = [Image.fromarray(a) for a in _arrays(3)]
    mirrors = [image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for image in images]
    X = featurizer.set_params(train_views=1, augmentation="flip").fit_transform(images)
    expected = _unit(_expected(reference, images) + _expected(reference, mirrors))
    np.testing.assert_allclose(X, expected, atol=1e-5)
    # transform never augments.
    np.testing.assert_allclose(featurizer.transform(images), _expected(reference, images), atol=1e-5)


@pytest.mark.parametrize("normalize", [True, False])
def test_random_views_are_the_seeded_views_whatever_the_threads(tiny_clip, reference, normalize):
    images = [Image.fromarray(a) for a in _arrays(5)]  # shorter sides below 2 x 32 px
    params = dict(pretrained=tiny_clip.checkpoint, train_views=3, random_state=7,
                  normalize=normalize)
    X = CLIPFeaturizer(tiny_clip.name, batch_size=2, num_workers=2, **params).fit_transform(images)
    views = [[image] + [augmented_view(image, "crop_flip", rng) for rng in generators]
             for image, generators in zip(images, view_generators(7, len(images), 3))]
    embedded = np.stack([_expected(reference, v, normalize=normalize) for v in views])
    expected = embedded.mean(axis=1)
    np.testing.assert_allclose(X, _unit(expected) if normalize else expected, atol=1e-5)
    one_thread = CLIPFeaturizer(tiny_clip.name, batch_size=16, num_workers=0, **params)
    np.testing.assert_allclose(one_thread.fit_transform(images), X, atol=1e-6)
    other_seed = one_thread.set_params(random_state=8).fit_transform(images)
    assert np.abs(other_seed - X).max() > 1e-3


def test_crops_of_large_images_are_resized_to_twice_the_models_input(featurizer, reference,
                                                                     tiny_clip):
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
              for shape in [(150, 100, 3), (64, 90, 3), (65, 90, 3)]]
    X = clone(featurizer).set_params(train_views=2, random_state=5).fit_transform(images)
    limit = 2 * tiny_clip.image_size
    views = [[image] + [augmented_view(image, "crop_flip", g, max_short_side=limit)
                        for g in generators]
             for image, generators in zip(images, view_generators(5, len(images), 2))]
    assert [[v.size for v in row[1:]] for row in views] == [
        [(64, 96)] * 2, [(90, 64)] * 2, [(89, 64)] * 2]
    expected = np.stack([_expected(reference, v) for v in views]).mean(axis=1)
    np.testing.assert_allclose(X, _unit(expected), atol=1e-5)


def test_an_opened_pil_image_is_decoded_by_one_thread_at_a_time(featurizer, image_files,
                                                                 monkeypatch):
    # The same object twice in X is two tasks of the decoding threads, and an opened
    # file read from two threads at once fails ("image file is truncated"). Each item's
    # views share its one decoding.
    exif_transpose, decoding, overlaps = ImageOps.exif_transpose, set(), []

    def slow_exif_transpose(image):
        overlaps.append(id(image) in decoding)
        decoding.add(id(image))
        time.sleep(0.02)  # widens the window in which another thread would enter
        try:
            return exif_transpose(image)
        finally:
            decoding.discard(id(image))

    monkeypatch.setattr(ImageOps, "exif_transpose", slow_exif_transpose)
    opened = [Image.open(p) for p in image_files.paths[:2]]
    X = clone(featurizer).set_params(train_views=2, random_state=0, num_workers=4).fit_transform(
        [opened[0], opened[1], opened[0]])
    assert len(overlaps) == 3 and not any(overlaps)
    assert np.isfinite(X).all()


def test_image_multiply_adds_count_every_token_through_every_weight(tiny_clip):
    loaded = clip_model.load_model(tiny_clip.name, tiny_clip.checkpoint)
    vision = TINY_CONFIG["vision_cfg"]
    tokens = (vision["image_size"] // vision["patch_size"]) ** 2 + 1
    blocks = sum(p.numel() for p in loaded.model.visual.transformer.parameters())
    # each token meets every weight of the blocks; patches, attention and the rest add
    # less than half again at this size
    assert tokens * blocks <= loaded.image_multiply_adds() <= 1.5 * tokens * blocks


@pytest.mark.parametrize("n_images, batch_size", [(3, 64), (10, 4)])
def test_model_threads_follow_the_multiply_adds_of_a_batch(featurizer, image_files, monkeypatch,
                                                           n_images, batch_size):
    works = []
    monkeypatch.setattr(featurizer_module, "threads_for",
                        lambda work, n_jobs: works.append(work) or 1)
    featurizer.set_params(batch_size=batch_size, device="cpu").fit_transform(
        image_files.paths[:n_images])
    per_image = featurizer._loaded_model().image_multiply_adds()
    assert works == [per_image * min(n_images, batch_size)]


def test_a_pipeline_fits_on_views_and_predicts_from_plain_images(featurizer, image_files):
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Recorder(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            self.fit_X_, self.classes_ = np.asarray(X), np.unique(y)
            return self

        def predict(self, X):
            self.predict_X_ = np.asarray(X)
            return np.full(len(X), self.classes_[0])

    featurizer.set_params(train_views=1, augmentation="flip")
    pipe = Pipeline([("clip", featurizer), ("clf", Recorder())])
    pipe.fit(image_files.paths, image_files.labels).predict(image_files.paths)
    np.testing.assert_array_equal(pipe[-1].fit_X_, clone(featurizer).fit_transform(image_files.paths))
    np.testing.assert_array_equal(pipe[-1].predict_X_, featurizer.transform(image_files.paths))
    assert np.abs(pipe[-1].fit_X_ - pipe[-1].predict_X_).max() > 1e-3


def test_views_and_tags(featurizer):
    with pytest.raises(ValueError, match="augmentation='flip' gives one view"):
        featurizer.set_params(train_views=2, augmentation="flip").fit(None)
    assert featurizer.set_params(augmentation="crop_flip").__sklearn_tags__().non_deterministic
    assert not featurizer.set_params(random_state=0).__sklearn_tags__().non_deterministic
    assert not featurizer.set_params(train_views=0, random_state=None).__sklearn_tags__().non_deterministic


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


def test_a_pil_image_closed_before_decoding_is_an_error_saying_so(featurizer, image_files):
    featurizer.fit(None)
    with Image.open(image_files.paths[1]) as image:
        pass  # the block ends before anything reads the pixels
    X = [image_files.paths[0], image]
    with pytest.raises(ValueError, match=r"Cannot decode X\[1\], a PIL image \(read from "
                       r".*\): its file was closed before its pixels were read"):
        featurizer.transform(X)
    with Image.open(image_files.paths[1]) as loaded:
        loaded.load()  # decoded inside the block: fine
    np.testing.assert_allclose(featurizer.transform([loaded]),
                               featurizer.transform(image_files.paths[1:2]), atol=1e-6)


def test_premultiplied_grey_and_alpha_converts_as_its_straight_mode(featurizer, reference):
    grey = _arrays(2, seed=4, channels=None)
    straight = [Image.merge("LA", [Image.fromarray(a), Image.new("L", a.shape[::-1], 255)])
                for a in grey]  # opaque: premultiplying changes nothing
    premultiplied = [image.convert("La") for image in straight]
    expected = _expected(reference, [image.convert("RGB") for image in straight])
    np.testing.assert_allclose(featurizer.fit(None).transform(premultiplied), expected,
                               atol=1e-5)


@pytest.mark.parametrize(
    "X, message",
    [
        ("image.jpg", "got a single str. Wrap it in a list"),
        (Image.new("RGB", (8, 8)), "got a single Image"),
        ([], "no image"),
        ([np.zeros((8, 8, 3), np.int64)], r"X\[0\]: Image arrays must be uint8.*got int64"),
        ([np.full((8, 8, 3), 2.0)], r"X\[0\]: .*in \[0, 1\].*span \[2.0, 2.0\]"),
        ([np.full((8, 8), np.nan)], "NaN"),
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
    "params", [{"batch_size": 0}, {"precision": "fp8"}, {"num_workers": -1}, {"model": 3},
               {"train_views": -1}, {"augmentation": "rotate"}]
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


# --- real photos: orientation, bit depth, ambiguous and empty inputs ---------------------


@pytest.fixture(scope="module")
def bundled():
    """The bundled model and 4 bundled Fashion-MNIST images (uint8, 28 x 28)."""
    from sklearn_cmm.bundled import BUNDLED_MODEL, load_fashion_mnist_sample

    featurizer = CLIPFeaturizer(BUNDLED_MODEL, pretrained="bundled", num_workers=0)
    images = load_fashion_mnist_sample().images[::500][:4]
    return featurizer.fit(None), images, featurizer.transform(list(images))


def _cosines(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _with_orientation(image, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_exif_orientation_is_applied_to_files_and_pil_images(bundled, tmp_path):
    featurizer, images, upright = bundled
    # Orientation 6 (a phone held upright): the pixels are stored turned 90 degrees
    # counter-clockwise and the viewer turns them back clockwise.
    stored = [Image.fromarray(a).transpose(Image.Transpose.ROTATE_90) for a in images]
    paths = []
    for i, image in enumerate(stored):
        paths.append(tmp_path / f"phone{i}.png")
        image.save(paths[-1], exif=_with_orientation(image, 6))
    sideways = featurizer.transform(stored)  # no tag: the pixels as stored
    assert np.min(_cosines(sideways, upright)) < 0.99  # the test can tell
    for X in (paths, [Image.open(p) for p in paths]):
        assert np.min(_cosines(featurizer.transform(X), upright)) >= 0.99


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(featurizer, tmp_path, orientation):
    # What each tag asks a viewer to do to the stored pixels; stored = its inverse.
    undo = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
            6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}
    inverse = {6: "ROTATE_90", 8: "ROTATE_270"}
    upright = Image.fromarray(_arrays(1, seed=5)[0])
    name = inverse.get(orientation, undo.get(orientation))
    stored = upright if name is None else upright.transpose(getattr(Image.Transpose, name))
    path = tmp_path / "photo.png"
    stored.save(path, exif=_with_orientation(stored, orientation))
    featurizer.fit(None)
    np.testing.assert_allclose(featurizer.transform([path]), featurizer.transform([upright]),
                               atol=1e-6)


def test_16_bit_and_float_images_embed_like_their_8_bit_versions(bundled, tmp_path):
    featurizer, images, upright = bundled
    wide = [a.astype(np.uint16) * 257 for a in images]  # 16 bits, same picture
    unit = [(a / 255).astype(np.float32) for a in images]  # floats in [0, 1]
    png16, tif_float = [], []
    for i, (w, u) in enumerate(zip(wide, unit)):
        png16.append(tmp_path / f"deep{i}.png")
        Image.fromarray(w).save(png16[-1])
        tif_float.append(tmp_path / f"float{i}.tif")
        Image.fromarray(u).save(tif_float[-1])
    assert Image.open(png16[0]).mode.startswith("I;16")
    assert Image.open(tif_float[0]).mode == "F"
    inputs = {
        "16-bit PNG files": png16,
        "float TIFF files": tif_float,
        "I;16 PIL images": [Image.fromarray(w) for w in wide],
        "mode-I PIL images": [Image.fromarray(w.astype(np.int32)) for w in wide],
        "mode-F PIL images": [Image.fromarray(u) for u in unit],
        "uint16 arrays": wide,
        "float arrays": unit,
        "float64 RGB arrays": [np.repeat(u[:, :, None], 3, axis=2).astype(np.float64)
                               for u in unit],
        "a uint16 batch": np.stack(wide),
        "a float batch": np.stack(unit),
    }
    for what, X in inputs.items():
        cosines = _cosines(featurizer.transform(X), upright)
        assert np.min(cosines) >= 0.99, what


@pytest.mark.parametrize("values, message", [
    (np.full((6, 6), 70000, np.int32), r"X\[0\].*mode-I image is read as 16-bit.*70000"),
    (np.full((6, 6), 1.5, np.float32), r"X\[0\].*mode-F image.*\[0, 1\].*1.5"),
])
def test_out_of_range_high_depth_pil_images_are_errors(featurizer, values, message):
    featurizer.fit(None)
    with pytest.raises(ValueError, match=message):
        featurizer.transform([Image.fromarray(values)])


@pytest.mark.parametrize("shape", [(28, 28, 3), (28, 28, 4), (28, 28, 1)])
def test_one_image_array_as_X_is_an_error_naming_both_readings(featurizer, shape):
    featurizer.fit(None)
    with pytest.raises(ValueError, match=r"one image of 28 x 28 pixels.*or 28 grayscale images.*\[image\]"):
        featurizer.transform(np.zeros(shape, np.uint8))
    assert featurizer.transform([np.zeros(shape, np.uint8)]).shape[0] == 1
    assert featurizer.transform(np.zeros((2, *shape), np.uint8)).shape[0] == 2


def test_grayscale_batches_are_still_batches(featurizer):
    featurizer.fit(None)
    assert featurizer.transform(np.zeros((3, 28, 28), np.uint8)).shape[0] == 3


@pytest.mark.parametrize("empty", [
    Image.new("RGB", (0, 0)), Image.new("L", (5, 0)), np.zeros((0, 0), np.uint8),
    np.zeros((0, 7, 3), np.uint8),
])
def test_empty_images_are_errors(featurizer, empty):
    featurizer.fit(None)
    with pytest.raises(ValueError, match=r"X\[1\].*empty"):
        featurizer.transform([_arrays(1)[0], empty])


def test_errors_mid_batch_name_the_item(featurizer, image_files, tmp_path):
    featurizer.fit(None)
    good = _arrays(3)
    with pytest.raises(ValueError, match=r"X\[2\]: Image arrays must be uint8"):
        featurizer.transform([good[0], good[1], good[2].astype(np.int64)])
    truncated = tmp_path / "truncated.png"
    Image.fromarray(_arrays(1, seed=3)[0]).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    lazy = Image.open(truncated)  # opening reads the header only
    with pytest.raises(ValueError, match=r"Cannot decode X\[1\], a PIL image \(read from '.*truncated.png'\)"):
        featurizer.transform([Image.fromarray(good[0]), lazy])
    with pytest.raises(ValueError, match=r"Cannot read image file '.*truncated.png' \(X\[2\]\)"):
        featurizer.transform([*image_files.paths[:2], truncated])
