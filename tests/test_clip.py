"""The CLIP model layer: loading, preprocessing, the model cache, the text encoder."""

import copy
import os
import pickle
import threading
import time

import huggingface_hub
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sklearn_cmm._clip import config, weights
from sklearn_cmm._clip import model as clip_model
from sklearn_cmm._clip.model import load_model
from sklearn_cmm._clip.text_encoder import CLIPTextEncoder
from sklearn_cmm.featurizer import CLIPFeaturizer

from ._tiny_clip import TINY_CONFIG, random_state_dict, reference_features, write_config

TEXTS = ["a photo of a temple.", "a photo of a flower.", "itap of a cat."]


@pytest.fixture
def count_loads(monkeypatch):
    """Empty model cache; returns a list that grows by one per open_clip model creation."""
    clip_model.clear_model_cache()
    calls = []
    create = open_clip.create_model

    def counting_create(*args, **kwargs):
        calls.append(args[0])
        return create(*args, **kwargs)

    monkeypatch.setattr(open_clip, "create_model", counting_create)
    yield calls
    clip_model.clear_model_cache()


@pytest.fixture(scope="module")
def bundled_dir(tmp_path_factory):
    """A bundled-model folder: a config with a preprocess_cfg and fp16 safetensors weights."""
    folder = tmp_path_factory.mktemp("bundled")
    name = "sklearn-cmm-test-bundled"
    preprocess = {
        "size": 32,
        "mode": "RGB",
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.25, 0.3],
        "interpolation": "bilinear",
        "resize_mode": "squash",
        "fill_color": 0,
    }
    write_config(folder / f"{name}.json", preprocess_cfg=preprocess)
    # Registering the config (from a copy without preprocess_cfg) lets us draw weights.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config, "BUNDLED_DIR", folder)
        config.model_name(name)
    weights = {k: v.half() for k, v in random_state_dict(name, seed=1).items()}
    save_file(weights, folder / f"{name}.safetensors")
    return folder, name, preprocess


def _photo(seed=0, size=(45, 37)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), np.uint8))


# --- model names and configs -------------------------------------------------------------


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown CLIP model 'no-such-model'.*open_clip"):
        config.model_name("no-such-model")


def test_json_config_path_registers_the_model(tmp_path):
    path = write_config(tmp_path / "sklearn-cmm-test-json.json")
    assert config.model_name(path) == "sklearn-cmm-test-json"
    assert config.model_name(str(path)) == "sklearn-cmm-test-json"  # registered once
    assert config.embed_dim_of(path) == TINY_CONFIG["embed_dim"]
    assert "sklearn-cmm-test-json" in open_clip.list_models()


def test_registered_configs_leave_no_temporary_folder(tmp_path, monkeypatch):
    """The stripped copy open_clip reads is removed once read; the config stays
    registered, also after open_clip rescans its configs for the next one."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    first = write_config(tmp_path / "sklearn-cmm-test-gone-a.json",
                         preprocess_cfg={"mean": [0.5, 0.5, 0.5]})
    config.model_name(first)
    config.model_name(write_config(tmp_path / "sklearn-cmm-test-gone-b.json"))
    assert list((tmp_path / "tmp").iterdir()) == []
    assert open_clip.get_model_config("sklearn-cmm-test-gone-a") == TINY_CONFIG
    assert "preprocess_cfg" not in open_clip.get_model_config("sklearn-cmm-test-gone-a")


def test_config_errors(tmp_path, tiny_clip):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="Cannot read the model config"):
        config.model_name(tmp_path / "broken.json")
    write_config(tmp_path / "partial.json", config={"embed_dim": 8})
    with pytest.raises(ValueError, match="not an open_clip model config.*text_cfg"):
        config.model_name(tmp_path / "partial.json")
    other = {**TINY_CONFIG, "embed_dim": 16}
    write_config(tmp_path / f"{tiny_clip.name}.json", config=other)
    with pytest.raises(ValueError, match="already has a different model config"):
        config.model_name(tmp_path / f"{tiny_clip.name}.json")
    # open_clip's own model under its name is that model; with a preprocess_cfg, another
    builtin = open_clip.get_model_config("RN50")
    assert config.model_name(write_config(tmp_path / "RN50.json", config=builtin)) == "RN50"
    (tmp_path / "other").mkdir()
    write_config(tmp_path / "other" / "RN50.json", config=builtin, preprocess_cfg={"mean": [0.5] * 3})
    with pytest.raises(ValueError, match="already has a different model config named 'RN50'"):
        config.model_name(tmp_path / "other" / "RN50.json")
    write_config(tmp_path / "odd-preprocess.json", preprocess_cfg={"crop": 3})
    with pytest.raises(ValueError, match="unknown keys \\['crop'\\]"):
        config.model_name(tmp_path / "odd-preprocess.json")


# --- loading and preprocessing -----------------------------------------------------------


def test_local_checkpoint_matches_open_clip(tiny_clip, count_loads):
    loaded = load_model(tiny_clip.name, tiny_clip.checkpoint, device="cpu")
    reference = open_clip.create_model(tiny_clip.name, pretrained=str(tiny_clip.checkpoint))
    reference.eval()
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor)
    assert not loaded.model.training
    assert loaded.embed_dim == 32 and loaded.image_size == (32, 32)

    images = [_photo(i) for i in range(3)]
    preprocess = open_clip.image_transform(32, is_train=False)
    batch = torch.from_numpy(np.stack([loaded.prepare(image) for image in images]))
    with torch.inference_mode():
        ours = loaded.encode_images(batch, "fp32").numpy()
    np.testing.assert_allclose(
        ours, reference_features(reference, images, preprocess, normalize=False), atol=1e-5
    )


def test_models_are_cached_per_weights_and_device(tiny_clip, count_loads):
    first = load_model(tiny_clip.name, tiny_clip.checkpoint, device="cpu")
    assert load_model(tiny_clip.name, str(tiny_clip.checkpoint), device="auto") is first
    assert load_model(tiny_clip.config_path, tiny_clip.checkpoint) is first
    assert count_loads == [tiny_clip.name]
    load_model(tiny_clip.name, None)
    assert len(count_loads) == 2


def _saved_again(path, write):
    """``write(path)``, then a modification time a second later than before: a file saved
    again within the file system's time resolution would keep its time."""
    before = path.stat().st_mtime_ns
    write(path)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_a_checkpoint_saved_again_at_its_path_is_loaded_again(tiny_clip, count_loads, tmp_path):
    checkpoint = tmp_path / "tiny.pt"
    old, new = (random_state_dict(tiny_clip.name, seed=seed) for seed in (1, 2))
    torch.save(old, checkpoint)
    count_loads.clear()
    first = load_model(tiny_clip.name, checkpoint)
    assert load_model(tiny_clip.name, checkpoint) is first
    _saved_again(checkpoint, lambda path: torch.save(new, path))
    second = load_model(tiny_clip.name, checkpoint)
    assert len(count_loads) == 2
    for name, tensor in new.items():
        torch.testing.assert_close(second.model.state_dict()[name], tensor)


def test_a_config_edited_in_place_is_read_again(count_loads, tmp_path):
    path = write_config(tmp_path / "sklearn-cmm-test-edited.json", preprocess_cfg={"mean": [0.5] * 3})
    first = load_model(path, None)
    _saved_again(path, lambda path: write_config(path, preprocess_cfg={"mean": [0.25] * 3}))
    second = load_model(path, None)
    assert first.preprocess_cfg["mean"] == [0.5] * 3 and second.preprocess_cfg["mean"] == [0.25] * 3
    assert load_model("sklearn-cmm-test-edited", None) is second
    wider = {**TINY_CONFIG, "embed_dim": 16}
    _saved_again(path, lambda path: write_config(path, config=wider))
    assert load_model(path, None).embed_dim == 16 and len(count_loads) == 3


def test_model_cache_is_bounded(tiny_clip, count_loads, monkeypatch):
    monkeypatch.setattr(clip_model, "_MAX_CACHED_MODELS", 1)
    first = load_model(tiny_clip.name, tiny_clip.checkpoint)
    load_model(tiny_clip.name, None)
    assert load_model(tiny_clip.name, tiny_clip.checkpoint) is not first
    assert len(count_loads) == 3


def test_random_weights_are_seeded(tiny_clip, count_loads):
    first = load_model(tiny_clip.name, None).model.state_dict()
    clip_model.clear_model_cache()
    second = load_model(tiny_clip.name, None).model.state_dict()
    for name, tensor in first.items():
        torch.testing.assert_close(second[name], tensor)


def test_bad_pretrained_is_a_clear_error(tiny_clip, tmp_path):
    with pytest.raises(ValueError, match="neither a pretrained tag of model 'ViT-B-16'.*openai"):
        load_model("ViT-B-16", "no-such-tag")
    with pytest.raises(ValueError, match="nor an existing checkpoint file"):
        load_model(tiny_clip.name, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="no bundled weights"):
        load_model(tiny_clip.name, "bundled")


@pytest.mark.parametrize("kind", ["garbage safetensors", "garbage pt", "another model's weights"])
def test_unloadable_checkpoint_is_a_value_error_naming_file_and_model(tiny_clip, tmp_path, kind):
    if kind == "another model's weights":  # the bundled model's into the tiny test model
        checkpoint = config.BUNDLED_DIR / "sklearn-cmm-fashion-tiny.safetensors"
    else:
        checkpoint = tmp_path / ("junk.safetensors" if "safetensors" in kind else "junk.pt")
        checkpoint.write_bytes(b"these are not weights" * 20)
    with pytest.raises(ValueError, match=(
        f"Cannot load the checkpoint '{checkpoint}' into CLIP model '{tiny_clip.name}'"
    )) as info:
        CLIPFeaturizer(tiny_clip.name, pretrained=checkpoint).fit(None)
    assert info.value.__cause__ is not None  # the underlying error stays attached


def test_unknown_model_message_lists_only_models():
    names = config.bundled_model_names()
    assert "sklearn-cmm-fashion-tiny" in names
    assert not [n for n in names if n.endswith(".train")]
    with pytest.raises(ValueError, match=r"a bundled model \(sklearn-cmm-fashion-tiny\) or") as info:
        CLIPFeaturizer("no-such-model").fit(None)
    assert ".train" not in str(info.value)


def test_bundled_model_uses_its_preprocess_cfg(bundled_dir, count_loads, monkeypatch):
    folder, name, preprocess = bundled_dir
    monkeypatch.setattr(config, "BUNDLED_DIR", folder)
    loaded = load_model(name, "bundled")
    for key in ("mean", "std"):
        assert tuple(loaded.preprocess_cfg[key]) == tuple(preprocess[key])
    assert loaded.preprocess_cfg["interpolation"] == "bilinear"
    assert loaded.preprocess_cfg["resize_mode"] == "squash"
    # The same file given by path is the same weights: one load.
    assert load_model(name, folder / f"{name}.safetensors") is loaded
    assert count_loads == [name]

    reference = open_clip.create_model(name, pretrained=str(folder / f"{name}.safetensors"))
    reference.eval()
    transform = open_clip.image_transform(
        32,
        is_train=False,
        mean=preprocess["mean"],
        std=preprocess["std"],
        interpolation="bilinear",
        resize_mode="squash",
    )
    images = [_photo(i, size=(50, 23)) for i in range(2)]
    batch = torch.from_numpy(np.stack([loaded.prepare(image) for image in images]))
    with torch.inference_mode():
        ours = loaded.encode_images(batch, "fp32").numpy()
    np.testing.assert_allclose(
        ours, reference_features(reference, images, transform, normalize=False), atol=1e-5
    )


def test_local_checkpoint_of_a_builtin_takes_the_settings_its_tags_share():
    # Every RN50 checkpoint open_clip knows was trained with QuickGELU.
    preprocess, quick_gelu = weights.local_checkpoint_settings("RN50")
    assert quick_gelu
    assert preprocess["mean"] == open_clip.OPENAI_DATASET_MEAN
    # ViT-B-16's OpenAI weights use QuickGELU, its LAION weights do not: say so.
    with pytest.warns(UserWarning, match="differ in \\['quick_gelu'\\].*ViT-B-16-quickgelu"):
        _, quick_gelu = weights.local_checkpoint_settings("ViT-B-16")
    assert not quick_gelu
    with pytest.warns(UserWarning, match="differ in \\['mean', 'std', 'quick_gelu'\\]"):
        preprocess, _ = weights.local_checkpoint_settings("ViT-L-14")
    assert "mean" not in preprocess


# --- pretrained tags and the hub ---------------------------------------------------------


@pytest.fixture
def fake_tag(tiny_clip, monkeypatch, tmp_path):
    """A pretrained tag of the tiny model whose weights sit in a hub cache folder."""
    tag_cfg = {
        "hf_hub": "sklearn-cmm/tiny-test/",
        "quick_gelu": True,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "interpolation": "bilinear",
        "resize_mode": "squash",
    }
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, tiny_clip.name, {"tinytag": tag_cfg})
    cache = tmp_path / "hub"
    snapshot = cache / "models--sklearn-cmm--tiny-test" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (cache / "models--sklearn-cmm--tiny-test" / "refs").mkdir()
    (cache / "models--sklearn-cmm--tiny-test" / "refs" / "main").write_text("0123abcd")
    save_file(random_state_dict(tiny_clip.name), snapshot / "open_clip_model.safetensors")
    return cache


def _no_download(*args, **kwargs):
    raise AssertionError("tried to download")


def test_cached_tag_loads_offline_with_its_quickgelu_and_preprocessing(
    tiny_clip, fake_tag, count_loads, monkeypatch
):
    monkeypatch.setattr(open_clip, "download_pretrained", _no_download)
    monkeypatch.setattr(weights, "_hub_reachable", _no_download)
    loaded = load_model(tiny_clip.name, "tinytag", cache_dir=fake_tag)
    # open_clip only warns when a tag needs QuickGELU; here it is switched on.
    assert any(isinstance(m, open_clip.model.QuickGELU) for m in loaded.model.modules())
    assert loaded.preprocess_cfg["resize_mode"] == "squash"
    assert tuple(loaded.preprocess_cfg["mean"]) == (0.5, 0.5, 0.5)


def test_missing_tag_without_network_fails_fast(tiny_clip, fake_tag, tmp_path, monkeypatch):
    monkeypatch.setattr(open_clip, "download_pretrained", _no_download)
    start = time.perf_counter()
    # HF_HUB_OFFLINE is set by the offline_hub fixture.
    with pytest.raises(RuntimeError, match="not in cache_dir=.*pretrained='/path/to/checkpoint'"):
        load_model(tiny_clip.name, "tinytag", cache_dir=tmp_path / "empty")
    # Without the flag, an unreachable hub is found out with one quick request.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    probed = []
    monkeypatch.setattr(weights, "_hub_reachable", lambda url: probed.append(url) or False)
    with pytest.raises(RuntimeError, match="cannot be downloaded.*cache_dir"):
        load_model(tiny_clip.name, "tinytag", cache_dir=tmp_path / "empty")
    assert probed == ["https://huggingface.co"]
    assert time.perf_counter() - start < 5


def test_default_featurizer_fails_fast_offline(tmp_path):
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="'ViT-B-16' pretrained='openai' are not in cache_dir"):
        CLIPFeaturizer(cache_dir=tmp_path).fit(None)
    assert time.perf_counter() - start < 5


# --- precision ---------------------------------------------------------------------------


def test_resolve_precision():
    cpu = torch.device("cpu")
    assert clip_model.resolve_precision("auto", cpu) == "fp32"
    assert clip_model.resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision='fp8'"):
        clip_model.resolve_precision("fp8", cpu)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_is_close_to_fp32(tiny_clip, precision):
    loaded = load_model(tiny_clip.name, tiny_clip.checkpoint)
    batch = torch.from_numpy(np.stack([loaded.prepare(_photo(i)) for i in range(2)]))
    with torch.inference_mode():
        exact = loaded.encode_images(batch, "fp32")
        mixed = loaded.encode_images(batch, precision)
    assert mixed.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(exact, mixed)
    assert cosine.min() > 0.99


# --- text encoder ------------------------------------------------------------------------


def test_text_encoder_matches_open_clip(tiny_clip):
    encoder = CLIPTextEncoder(tiny_clip.name, tiny_clip.checkpoint, batch_size=2)
    reference = open_clip.create_model(tiny_clip.name, pretrained=str(tiny_clip.checkpoint))
    tokens = open_clip.get_tokenizer(tiny_clip.name)(TEXTS)
    with torch.inference_mode():
        expected = reference.eval().encode_text(tokens).numpy()
    features = encoder.encode_text(TEXTS)
    assert features.shape == (3, 32) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, atol=1e-5)
    assert encoder.embed_dim == 32
    assert encoder.encode_text([]).shape == (0, 32)


def test_pre_projection_times_projection_is_encode_text(tiny_clip):
    encoder = CLIPTextEncoder(tiny_clip.name, tiny_clip.checkpoint)
    pre = encoder.encode_text_pre_projection(TEXTS)
    projection = encoder.text_projection
    assert pre.shape == (3, 32) and projection.shape == (32, 32)
    np.testing.assert_allclose(pre @ projection, encoder.encode_text(TEXTS), atol=1e-5)
    # The projection was put back: projected features are still projected.
    loaded = load_model(tiny_clip.name, tiny_clip.checkpoint)
    assert isinstance(loaded.model.text_projection, torch.nn.Parameter)
    # a copy: changing it leaves the cached model (and every other encoder) alone
    projection *= 2
    np.testing.assert_allclose(encoder.text_projection * 2, projection)


def test_the_projection_is_read_only_while_no_encoding_has_it_swapped_out(tiny_clip):
    # Pre-projection features take the projection out of the model for a moment; another
    # thread (a threaded grid search's SeMoBridge fit) reading it then must wait.
    encoder = CLIPTextEncoder(tiny_clip.name, tiny_clip.checkpoint)
    loaded = load_model(tiny_clip.name, tiny_clip.checkpoint)
    tokenizer, read = loaded.tokenizer, {}

    def reader():
        try:
            read["projection"] = encoder.text_projection
        except ValueError as exc:
            read["error"] = exc

    def tokenizer_that_starts_a_reader(texts):
        thread = threading.Thread(target=reader)
        thread.start()
        thread.join(0.2)
        read["waited"] = thread.is_alive()
        read["thread"] = thread
        return tokenizer(texts)

    loaded.tokenizer = tokenizer_that_starts_a_reader
    try:
        encoder.encode_text_pre_projection(["a new prompt to encode."])
    finally:
        loaded.tokenizer = tokenizer
    read["thread"].join()
    assert read["waited"] and "error" not in read
    np.testing.assert_array_equal(read["projection"], encoder.text_projection)


def test_one_string_is_not_a_list_of_texts(tiny_clip):
    encoder = CLIPTextEncoder(tiny_clip.name, tiny_clip.checkpoint)
    with pytest.raises(ValueError, match="a list of strings.*one string"):
        encoder.encode_text("a cat")


@pytest.mark.parametrize("batch_size", [0, -1, 2.0])
def test_batch_size_must_be_a_positive_integer(tiny_clip, batch_size):
    encoder = CLIPTextEncoder(tiny_clip.name, tiny_clip.checkpoint, batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        encoder.encode_text(["a new prompt to encode."])


def test_projection_that_is_not_a_matrix_is_a_clear_error(tmp_path):
    text_cfg = {**TINY_CONFIG["text_cfg"], "proj_bias": True}
    path = write_config(tmp_path / "sklearn-cmm-test-linear-proj.json", {**TINY_CONFIG, "text_cfg": text_cfg})
    encoder = CLIPTextEncoder(path, None)
    assert encoder.encode_text(["a cat"]).shape == (1, 32)
    with pytest.raises(ValueError, match="no plain text_projection matrix.*Linear"):
        encoder.text_projection
    with pytest.raises(ValueError, match="no plain text_projection matrix"):
        encoder.encode_text_pre_projection(["a cat"])


def test_encoded_texts_are_memoised(tiny_clip, count_loads, monkeypatch):
    encoder = CLIPTextEncoder(tiny_clip.name, tiny_clip.checkpoint)
    first = encoder.encode_text(TEXTS)
    runs = []
    run = clip_model.LoadedModel._run_text_tower
    monkeypatch.setattr(
        clip_model.LoadedModel, "_run_text_tower", lambda self, texts, *a: runs.append(texts) or run(self, texts, *a)
    )
    again = copy.deepcopy(encoder).encode_text(TEXTS[::-1] + ["a new prompt."])
    np.testing.assert_array_equal(again[:3], first[::-1])
    assert runs == [["a new prompt."]]


def test_text_encoder_is_a_light_value(tiny_clip):
    encoder = CLIPTextEncoder(tiny_clip.name, tiny_clip.checkpoint, precision="fp32")
    encoder.encode_text(["warm the cache"])
    assert not any(isinstance(v, torch.nn.Module) for v in vars(encoder).values())
    restored = pickle.loads(pickle.dumps(encoder))
    assert restored == encoder and hash(restored) == hash(encoder)
    assert len(pickle.dumps(encoder)) < 1000
    assert copy.deepcopy(encoder) == encoder
    assert encoder != CLIPTextEncoder(tiny_clip.name, None)
    assert repr(CLIPTextEncoder()) == "CLIPTextEncoder(model='ViT-B-16', pretrained='openai')"
    assert repr(CLIPTextEncoder("RN50", device="cpu", batch_size=8)) == (
        "CLIPTextEncoder(model='RN50', pretrained='openai', device='cpu', batch_size=8)"
    )
