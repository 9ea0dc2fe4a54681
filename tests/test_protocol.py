"""The benchmark protocol: datasets, CoOp's shot draw, feature files, tuning, the runner."""

import csv
import json
import os
import random
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from sklearn_cmm.cli import main
from sklearn_cmm.protocol import runner, tuning
from sklearn_cmm.protocol.datasets import (
    DATASETS, FEW_SHOT_DATASETS, SHIFT_DATASETS, get_spec, read_split,
)
from sklearn_cmm.protocol.features import feature_file_name, load_features
from sklearn_cmm.protocol.published import load_published, parse_cell, published_result
from sklearn_cmm.protocol.sampling import coop_few_shot
from sklearn_cmm.protocol.synthetic import make_synthetic_features

from ._tiny_clip import random_state_dict

# Small and fast: SeMoBridge-T trains for a few steps only.
FAST = ["--set", "semobridge-t.max_iter=20", "--set", "semobridge-t.warmup_iter=2"]


# ---------------------------------------------------------------------------- datasets


def test_eleven_datasets_and_four_variants_with_coop_facts():
    assert len(FEW_SHOT_DATASETS) == 11 and len(SHIFT_DATASETS) == 4
    assert set(FEW_SHOT_DATASETS) | set(SHIFT_DATASETS) == set(DATASETS)
    pets = get_spec("OxfordPets")
    assert (pets.folder, pets.split_file) == ("oxford_pets", "split_zhou_OxfordPets.json")
    assert pets.template == "a photo of a {}, a type of pet."
    assert get_spec("dtd").template == "{} texture."
    assert get_spec("EuroSAT").template == "a centered satellite photo of {}."
    assert get_spec("Flowers102").key == "oxford_flowers"
    assert get_spec("imagenet-a").n_classes == 200
    assert all(DATASETS[k].test_only for k in SHIFT_DATASETS)
    # The published tables' column names are our display names.
    published = {r["dataset"] for r in load_published()} - {"AVERAGE"}
    assert published == {DATASETS[k].name for k in FEW_SHOT_DATASETS}
    with pytest.raises(ValueError, match="Unknown dataset"):
        get_spec("mnist")


def test_an_imagenet_class_folder_missing_from_classnames_is_named(tmp_path):
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet" / "classnames.txt").write_text("n01440764 tench\n")
    for wnid in ("n01440764", "n09999999"):
        _touch(tmp_path / "imagenet" / "images" / "train" / wnid / "a.JPEG")
    with pytest.raises(ValueError, match="1 folder.* not in .*classnames.txt, e.g. "
                       "'n09999999'"):
        read_split(tmp_path, "imagenet")


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_read_split_of_the_other_layouts(tmp_path):
    fgvc = tmp_path / "fgvc_aircraft"
    fgvc.mkdir()
    (fgvc / "variants.txt").write_text("707-320\nA300B4\n")
    for split, lines in [("train", "0001 A300B4\n0002 707-320\n"), ("val", "0003 707-320\n"),
                         ("test", "0004 A300B4\n")]:
        (fgvc / f"images_variant_{split}.txt").write_text(lines)
    splits, names = read_split(tmp_path, "fgvc_aircraft")
    assert names == ["707-320", "A300B4"]
    assert splits["train"][1] == [1, 0]
    assert splits["train"][0][0] == fgvc / "images" / "0001.jpg"

    classnames = "n01440764 tench\nn01443537 goldfish\n"
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet" / "classnames.txt").write_text(classnames)
    for sub, wnid, image in [("train", "n01443537", "a.JPEG"), ("train", "n01440764", "b.JPEG"),
                             ("val", "n01440764", "c.JPEG")]:
        _touch(tmp_path / "imagenet" / "images" / sub / wnid / image)
    _touch(tmp_path / "imagenet" / "images" / "train" / "train_cls.txt")  # not a class
    splits, names = read_split(tmp_path, "imagenet")
    assert names == ["tench", "goldfish"]
    assert splits["train"][1] == [0, 1] and splits["test"][1] == [0]
    assert splits["val"] == ([], [])  # ImageNet has no val split

    (tmp_path / "imagenet-rendition").mkdir()
    (tmp_path / "imagenet-rendition" / "classnames.txt").write_text(classnames)
    _touch(tmp_path / "imagenet-rendition" / "imagenet-r" / "n01443537" / "x.jpg")
    _touch(tmp_path / "imagenet-rendition" / "imagenet-r" / "README.txt")
    splits, names = read_split(tmp_path, "imagenet_r")
    assert splits["test"][1] == [1] and names == ["tench", "goldfish"]  # ImageNet's labels


# ---------------------------------------------------------------------------- sampling


def _coop_reference(train_labels, val_labels, n_shots, seed):
    """CoOp's own procedure (dassl's generate_fewshot_dataset) on (index, label) items."""
    random.seed(seed)
    out = []
    for labels, k in ((train_labels, n_shots), (val_labels, min(n_shots, 4))):
        tracker = defaultdict(list)
        for item in enumerate(labels):
            tracker[item[1]].append(item)
        picked = []
        for items in tracker.values():
            picked += random.sample(items, k) if len(items) >= k else items
        out.append([index for index, _ in picked])
    return out


def test_coop_draw_is_coops_and_reproducible():
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, 7, 300), rng.integers(0, 7, 80)
    for shots in (1, 2, 4, 8, 16):
        for seed in (1, 2, 3):
            state = random.getstate()
            a_train, a_val, from_train = coop_few_shot(train, val, shots, seed)
            assert random.getstate() == state  # the global generator is left alone
            b_train, b_val, _ = coop_few_shot(train, val, shots, seed)
            np.testing.assert_array_equal(a_train, b_train)
            np.testing.assert_array_equal(a_val, b_val)
            ref_train, ref_val = _coop_reference(train, val, shots, seed)
            assert a_train.tolist() == ref_train and a_val.tolist() == ref_val
            assert not from_train
            counts_train = np.bincount(train[a_train], minlength=7)
            counts_val = np.bincount(val[a_val], minlength=7)
            assert np.all(counts_train == np.minimum(shots, np.bincount(train, minlength=7)))
            assert np.all(counts_val == np.minimum(min(shots, 4), np.bincount(val)))
    one, _, _ = coop_few_shot(train, val, 4, 1)
    two, _, _ = coop_few_shot(train, val, 4, 2)
    assert set(one) != set(two)


def test_coop_draw_samples_a_class_with_exactly_n_shots():
    # CoOp calls random.sample on a class with exactly n_shots images too: skipping it
    # (keeping the images in order without drawing) would shift every later class's draw.
    labels = np.repeat([0, 1], [3, 5])
    train, _, _ = coop_few_shot(labels, None, 3, seed=7, n_val_shots=1)
    rng = random.Random(7)
    expected = rng.sample([0, 1, 2], 3) + rng.sample([3, 4, 5, 6, 7], 3)
    assert train.tolist() == expected
    short, _, _ = coop_few_shot(np.repeat([0, 1], [2, 5]), None, 3, seed=7, n_val_shots=1)
    rng = random.Random(7)
    assert short.tolist() == [0, 1] + rng.sample([2, 3, 4, 5, 6], 3)  # fewer: all, no draw


def test_without_val_split_validation_comes_from_unused_training_images():
    labels = np.repeat(np.arange(5), 30)
    train, val, from_train = coop_few_shot(labels, np.array([], int), 16, seed=1)
    assert from_train
    assert not set(train) & set(val)
    assert np.all(np.bincount(labels[val]) == 4)


def test_a_draw_without_training_or_validation_images_of_a_class_is_refused():
    labels = np.repeat(np.arange(3), [5, 6, 6])  # no val split: class 0 has 5 images
    train, val, from_train = runner.few_shot_indices(labels, np.array([], int), 3, 4, 1, "d")
    assert from_train and np.all(np.bincount(labels[val]) == [1, 2, 2])
    with pytest.raises(ValueError, match=r"d, 5 shots, seed 2: no validation images of 1 of "
                       r"the 3 classes \(label 0 first\): the dataset has no val split"):
        runner.few_shot_indices(labels, np.array([], int), 3, 5, 2, "d")
    with pytest.raises(ValueError, match="no training shots of 1 of the 4 classes "
                       r"\(label 3 first\): the train split has no image of them"):
        runner.few_shot_indices(labels, np.array([], int), 4, 1, 1, "d")
    with pytest.raises(ValueError, match="no validation images of 1 of the 3 classes "
                       r"\(label 1 first\): the val split has no image of them"):
        runner.few_shot_indices(labels, np.array([0, 2, 2]), 3, 1, 1, "d")


# --------------------------------------------------------------------- published tables


def test_parse_cells():
    assert parse_cell("91.79±0.19 0:00:28") == (91.79, 0.19, 28.0)
    assert parse_cell("65.48±0.08 0:01:45") == (65.48, 0.08, 105.0)
    assert parse_cell("85.89") == (85.89, None, None)
    assert parse_cell("87.22±x x") == (87.22, None, None)
    assert parse_cell("") == parse_cell("#DIV/0!") == (None, None, None)


def test_published_lookup():
    sb = published_result("ViT-B-16", "semobridge-t", 16, "ImageNet")
    assert (sb["mean"], sb["std"], sb["time_s"]) == (73.98, 0.05, 72.0)
    assert published_result("RN50", "semobridge", 1, "OxfordPets")["mean"] == 87.74
    # zero-shot is the published 0-shot row, at any number of shots
    assert published_result("ViT-B-16", "zero-shot", 8, "EuroSAT")["mean"] == 48.31
    assert published_result("ViT-B-16", "tip-adapter", 4, "AVERAGE")["mean"] == 73.76
    assert published_result("ViT-B-16", "tip-adapter-f", 16, "AVERAGE")["mean"] == 80.7
    assert published_result("ViT-B-16", "cmm", 4, "DTD") is None
    assert published_result("ViT-L-14", "semobridge", 4, "DTD") is None


# ------------------------------------------------------------------ feature extraction


def _fake_coop_tree(root, n_classes=3, per_split=(4, 2, 3)):
    """oxford_pets in CoOp's layout: generated PNGs and split_zhou_OxfordPets.json."""
    folder = root / "oxford_pets"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    split, n = {"train": [], "val": [], "test": []}, 0
    for name, count in zip(split, per_split):
        for i in range(count * n_classes):
            label = (i * 7 + len(name)) % n_classes  # not sorted by class, as real splits
            colour = np.array([60 + 80 * label, 200 - 60 * label, 90], dtype=float)
            pixels = np.clip(colour + 40 * rng.standard_normal((24, 20, 3)), 0, 255)
            path = f"breed_{label}_{n}.png"
            Image.fromarray(pixels.astype(np.uint8)).save(folder / "images" / path)
            split[name].append([path, label, f"breed_{label}"])
            n += 1
    (folder / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    return split


def _extract(root, out, tiny_clip, *extra):
    return main(["extract-features", "--dataset-root", str(root), "--dataset", "oxford_pets",
                 "--model", tiny_clip.name, "--pretrained", str(tiny_clip.checkpoint),
                 "--out", str(out), "--device", "cpu", "--chunk-size", "4", "--quiet",
                 "--num-workers", "0", *extra])


def test_extract_features_writes_the_file_and_resumes(tmp_path, tiny_clip, monkeypatch):
    from sklearn_cmm.featurizer import CLIPFeaturizer

    split = _fake_coop_tree(tmp_path / "data")
    cupl = tmp_path / "cupl.json"
    cupl.write_text(json.dumps({f"breed {k}": [f"a breed {k} dog.", f"breed {k} fur."]
                                for k in range(3)}))
    out = tmp_path / "features"
    assert _extract(tmp_path / "data", out, tiny_clip, "--keep-cache", "--cupl", str(cupl)) == 0
    path = out / feature_file_name("oxford_pets", tiny_clip.name, tiny_clip.checkpoint)
    data = load_features(path)
    dim = tiny_clip.embed_dim
    for name, items in split.items():
        assert data[f"{name}_features"].shape == (len(items), dim)
        assert data[f"{name}_labels"].tolist() == [label for _, label, _ in items]
    assert data["class_names"] == ["breed_0", "breed_1", "breed_2"]
    for key in ("text_features", "text_features_clip", "text_features_coop",
                "text_features_cupl"):
        assert data[key].shape == (3, dim)
        np.testing.assert_allclose(np.linalg.norm(data[key], axis=1), 1, rtol=1e-5)
    width = data["text_projection"].shape[0]
    assert data["pre_projection_text_features"].shape == (3, width)
    # One prompt a class (CoOp's template): the prototype is its projected pre-projection.
    coop = data["pre_projection_text_features_coop"] @ data["text_projection"]
    coop /= np.linalg.norm(coop, axis=1, keepdims=True)
    np.testing.assert_allclose(coop, data["text_features_coop"], atol=1e-5)
    meta = data["metadata"]
    assert meta["model"] == tiny_clip.name and meta["embed_dim"] == dim
    assert meta["prompt_sets"] == ["clip", "coop", "cupl"] and not meta["synthetic"]
    assert {"date", "sklearn_cmm_version", "pretrained"} <= set(meta)
    # Raw (not normalised) features of the model, in the split's order.
    reference = CLIPFeaturizer(tiny_clip.name, pretrained=str(tiny_clip.checkpoint),
                               device="cpu", normalize=False, num_workers=0).fit(None)
    paths = [tmp_path / "data" / "oxford_pets" / "images" / p for p, _, _ in split["test"]]
    np.testing.assert_allclose(data["test_features"], reference.transform(paths), atol=1e-5)

    # Resume: a finished file is skipped; a missing chunk is the only one recomputed.
    calls = []
    original = CLIPFeaturizer.transform
    monkeypatch.setattr(CLIPFeaturizer, "transform",
                        lambda self, X: calls.append(len(X)) or original(self, X))
    assert _extract(tmp_path / "data", out, tiny_clip) == 0
    assert calls == []
    path.unlink()
    chunks = sorted((out / ".cache").rglob("train_*.npy"))
    assert len(chunks) == 3  # 12 training images in chunks of 4
    chunks[1].unlink()
    assert _extract(tmp_path / "data", out, tiny_clip, "--cupl", str(cupl)) == 0
    assert calls == [4]
    again = load_features(path)
    np.testing.assert_allclose(again["train_features"], data["train_features"], atol=1e-6)
    assert not (out / ".cache" / path.stem).exists()  # cache removed once written


def test_a_resumed_extraction_recomputes_a_cache_of_other_inputs(tmp_path, tiny_clip):
    from sklearn_cmm.featurizer import CLIPFeaturizer

    split = _fake_coop_tree(tmp_path / "data")
    cupl = tmp_path / "cupl.json"
    cupl.write_text(json.dumps({f"breed {k}": [f"a breed {k} dog."] for k in range(3)}))
    out = tmp_path / "features"
    path = out / feature_file_name("oxford_pets", tiny_clip.name, tiny_clip.checkpoint)
    # a run on 2 training images a class leaves its chunks, as a killed run would
    assert _extract(tmp_path / "data", out, tiny_clip, "--keep-cache",
                    "--max-train-per-class", "2") == 0
    path.unlink()
    # all the training images, in chunks of another size, and CuPL prompts besides
    assert _extract(tmp_path / "data", out, tiny_clip, "--chunk-size", "8", "--cupl",
                    str(cupl)) == 0
    data = load_features(path)
    reference = CLIPFeaturizer(tiny_clip.name, pretrained=str(tiny_clip.checkpoint),
                               device="cpu", normalize=False, num_workers=0).fit(None)
    paths = [tmp_path / "data" / "oxford_pets" / "images" / p for p, _, _ in split["train"]]
    np.testing.assert_allclose(data["train_features"], reference.transform(paths), atol=1e-5)
    assert data["train_labels"].tolist() == [label for _, label, _ in split["train"]]
    assert data["text_features_cupl"].shape == (3, tiny_clip.embed_dim)


def test_extraction_tells_checkpoints_apart_by_path_and_version(tmp_path, tiny_clip):
    import torch

    split = _fake_coop_tree(tmp_path / "data")
    runs = [tmp_path / run / "epoch_10.pt" for run in ("run_a", "run_b")]
    for seed, checkpoint in enumerate(runs):
        checkpoint.parent.mkdir()
        torch.save(random_state_dict(tiny_clip.name, seed=seed), checkpoint)
    names = {feature_file_name("oxford_pets", tiny_clip.name, c) for c in runs}
    assert len(names) == 2 and all("epoch_10-" in name for name in names)

    def extract(checkpoint, *extra):
        out = tmp_path / "features"
        assert _extract(tmp_path / "data", out, SimpleNamespace(
            name=tiny_clip.name, checkpoint=checkpoint), *extra) == 0
        return out / feature_file_name("oxford_pets", tiny_clip.name, checkpoint)

    # run A's cache stays (as a killed run's would); other weights are saved at its path
    # (with another modification time), as a training run's next epoch
    extract(runs[0], "--keep-cache").unlink()
    torch.save(random_state_dict(tiny_clip.name, seed=1), runs[0])
    os.utime(runs[0], ns=(1, 1))
    data = load_features(extract(runs[0]))
    reference = load_features(extract(runs[1]))
    for key in ("train_features", "test_features", "text_features"):
        np.testing.assert_allclose(data[key], reference[key], atol=1e-5)


def test_cupl_folder_files_are_found_by_any_name_of_the_dataset(tmp_path):
    from sklearn_cmm.protocol.extract import load_descriptions

    names = {"CuPL_prompts_flowers102.json": "oxford_flowers",
             "CuPL_prompts_OxfordPets.json": "oxford_pets",
             "describable-textures.json": "dtd", "CuPL_prompts_imagenet.json": "imagenet"}
    for file_name, dataset in names.items():
        (tmp_path / file_name).write_text(json.dumps({"a b": [f"{dataset} a b."]}))
    for dataset in names.values():
        assert load_descriptions(tmp_path, get_spec(dataset), ["a_b"]) == [[f"{dataset} a b."]]
    # ImageNet's file is not ImageNet-Sketch's, nor another dataset's name a part of one
    for dataset in ("imagenet_sketch", "caltech101"):
        assert load_descriptions(tmp_path, get_spec(dataset), ["a_b"]) is None


def test_extract_reports_missing_datasets(tmp_path, tiny_clip, capsys):
    assert main(["extract-features", "--dataset-root", str(tmp_path), "--dataset", "dtd,eurosat",
                 "--model", tiny_clip.name, "--pretrained", str(tiny_clip.checkpoint),
                 "--out", str(tmp_path / "out"), "--quiet"]) == 1
    assert "Not found under" in capsys.readouterr().out
    assert not list((tmp_path / "out").glob("*.npz"))


# ------------------------------------------------------------------------------ runner


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    make_synthetic_features(
        folder, ["imagenet", "caltech101", "eurosat", "imagenetv2", "imagenet_a"],
        dim=24, n_classes=6, caps={"train": 20, "val": 6, "test": 10})
    return folder


def test_synthetic_files_have_a_modality_gap(synthetic_dir):
    data = load_features(synthetic_dir / "eurosat__ViT-B-16__synthetic.npz")
    images = data["test_features"] / np.linalg.norm(data["test_features"], axis=1,
                                                    keepdims=True)
    gap = np.linalg.norm(images.mean(0) - data["text_features"].mean(0))
    assert gap > 0.5
    assert data["metadata"]["synthetic"] and data["val_features"].shape[0] == 36
    imagenet = load_features(synthetic_dir / "imagenet__ViT-B-16__synthetic.npz")
    assert imagenet["val_features"].shape[0] == 0  # like the real one
    variant = load_features(synthetic_dir / "imagenet_a__ViT-B-16__synthetic.npz")
    assert len(np.unique(variant["test_labels"])) < 6  # a subset of ImageNet's classes


def test_benchmark_runs_every_method_and_prints_the_comparison(synthetic_dir, tmp_path,
                                                               capsys):
    out = tmp_path / "results"
    assert main(["benchmark", "--features", str(synthetic_dir), "--shots", "1,2",
                 "--seeds", "1,2", "--out", str(out), "--quiet", *FAST]) == 0
    printed = capsys.readouterr().out
    for text in ("Zero-shot CLIP", "Tip-Adapter", "CMM", "SeMoBridge-T", "Linear probe",
                 "ImageNet", "Caltech101", "EuroSAT", "published", "difference",
                 "68.73±0.00"):  # the published zero-shot ImageNet number (ViT-B/16)
        assert text in printed
    record = json.loads((out / "results.json").read_text())
    assert len(record["runs"]) == 3 * 2 * 2 * 6
    assert all(0 <= r["accuracy"] <= 1 for r in record["runs"])
    with open(out / "results.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["Model", "Method", "Shots", "EuroSAT", "Caltech101", "ImageNet",
                        "AVERAGE ACCURACY", "AVERAGE TRAINING TIME"]
    assert table[1][:3] == ["ViT-B/16", "Zero-shot CLIP", "1"]
    assert len(table) == 1 + 6 * 2 and "±" in table[1][3]
    comparison = (out / "comparison.csv").read_text()
    assert "published" in comparison.splitlines()[0]


def test_distribution_shift_protocol(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "shift"
    assert main(["benchmark", "--features", str(synthetic_dir), "--distribution-shift",
                 "--methods", "zero-shot,tip-adapter", "--shots", "4", "--seeds", "1",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "ImageNet-V2" in printed and "ImageNet-A" in printed
    record = json.loads((out / "shift_results.json").read_text())
    assert {"accuracy_imagenetv2", "accuracy_imagenet_a"} <= set(record["runs"][0])


def _runs(data, methods=("tip-adapter", "linear-probe", "cmm")):
    return runner.evaluate(data, list(methods), [2], [1, 2])


def test_test_labels_are_never_used_for_tuning(synthetic_dir, monkeypatch):
    data = load_features(synthetic_dir / "caltech101__ViT-B-16__synthetic.npz")
    seen = []
    original = tuning.tune_and_fit

    def spy(method, *arrays, **kwargs):
        seen.extend(arrays)
        return original(method, *arrays, **kwargs)

    monkeypatch.setattr(tuning, "tune_and_fit", spy)
    honest = _runs(data)
    assert seen and not any(np.shares_memory(a, data["test_features"])
                            or np.shares_memory(a, data["test_labels"]) for a in seen)
    # Poisoned test labels change the scores, never what was chosen.
    poisoned = {**data, "test_labels": (data["test_labels"] + 1) % 6}
    cheated = _runs(poisoned)
    for a, b in zip(honest, cheated):
        assert (a["params"], a["val_accuracy"]) == (b["params"], b["val_accuracy"])
    assert [a["accuracy"] for a in honest] != [b["accuracy"] for b in cheated]


def test_tuning_keeps_the_best_candidate_on_validation(synthetic_dir):
    data = load_features(synthetic_dir / "eurosat__ViT-B-16__synthetic.npz")
    X_train, y_train, X_val, y_val = runner.few_shot_sets(data, 4, 1)
    result = tuning.tune_and_fit("linear-probe", X_train, y_train, X_val, y_val, seed=1)
    scores = [score for _, score, _ in result.candidates]
    assert result.val_accuracy == max(scores)
    assert result.params == result.candidates[scores.index(max(scores))][0]
    assert result.estimator.score(X_val, y_val) == result.val_accuracy


def test_select_text_combines_prompt_sets(synthetic_dir):
    data = load_features(synthetic_dir / "eurosat__ViT-B-16__synthetic.npz")
    both = runner.select_text(data, "clip+coop")["text_features"]
    np.testing.assert_allclose(both, data["text_features"], atol=1e-6)
    coop = runner.select_text(data, "coop")["text_features"]
    np.testing.assert_allclose(coop, data["text_features_coop"], atol=1e-6)
    # SeMoBridge leaves CLIP's templates out on EuroSAT
    np.testing.assert_allclose(runner.select_text(data, "semobridge")["text_features"],
                               coop, atol=1e-6)
    with pytest.raises(ValueError, match="cupl"):
        runner.select_text(data, "cupl")


def test_cpu_model_reads_cpuinfo_and_falls_back_to_platform(tmp_path, monkeypatch):
    import builtins
    import platform

    from sklearn_cmm.protocol import report

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nflags\t: sse\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(
        cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
    assert report.cpu_model() == "Some CPU @ 2.0GHz"
    cpuinfo.unlink()  # not Linux: platform's answer
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert report.cpu_model() == platform.machine()
    assert report.run_environment()["machine"]["processor"] == platform.machine()
