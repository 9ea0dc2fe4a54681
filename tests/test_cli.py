import argparse
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from sklearn_cmm.bundled import load_fashion_mnist_sample
from sklearn_cmm.cli import SUBCOMMANDS, build_parser, main, plain_text
from sklearn_cmm.protocol import demo, extract, report, runner, synthetic
from sklearn_cmm.protocol.methods import search_space
from sklearn_cmm.protocol.synthetic import make_synthetic_features
from sklearn_cmm.semobridge import SeMoBridgeClassifier

# what reStructuredText and Sphinx leave in text: roles, double back-quotes
_MARKUP = re.compile(r":\w+:`|``")
# a folder that cannot be made: its parent is a file
_UNDER_A_FILE = f"{__file__}/out"
_EXTRACT = ["extract-features", "--dataset-root", ".", "--dataset", "dtd", "--out", "x"]


def _help(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_plain_help(name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "64")  # narrow: wrapping must not split words
    out = _help(capsys, [name, "--help"])
    assert out.startswith("usage: sklearn-cmm " + name)
    assert not _MARKUP.search(out)
    assert not re.search(r"\w-\n", out)  # no --long-option or path broken at a hyphen
    for action in build_parser()._actions[-1].choices[name]._actions:
        assert action.help, action.option_strings  # every option says what it does


def test_plain_text_unmarks_roles_and_literals():
    text = ("Embeds with :class:`~sklearn_cmm.CLIPFeaturizer`, see :mod:`a.b` and "
            ":func:`the split <sklearn_cmm.model_selection.FewShotSplit>`; ``--out``.")
    assert plain_text(text) == "Embeds with CLIPFeaturizer, see a.b and the split; --out."


def _fail(*args, **kwargs):
    raise AssertionError("heavy work started before the arguments were checked")


@pytest.mark.parametrize("argv, problem", [
    (["demo", "--methods", "zero-shot,foo"], "'foo'"),
    (["demo", "--shots", "abc"], "--shots"),
    (["demo", "--seeds", "1,-2"], "--seeds"),
    (["demo", "--seeds", "1,2,1"], "1 given more than once"),
    (["benchmark", "--features", ".", "--shots", "4,4"], "4 given more than once"),
    (["demo", "--threads", "0"], "--threads"),
    (["benchmark", "--features", "/nonexistent"], "/nonexistent"),
    (["benchmark", "--features", ".", "--methods", "foo"], "'foo'"),
    (["benchmark", "--features", ".", "--set", "cmm"], "METHOD.PARAM=VALUE"),
    (["benchmark", "--features", ".", "--set", "foo.max_iter=3"], "'foo'"),
    (["benchmark", "--features", ".", "--datasets", "mnist"], "'mnist'"),
    (["benchmark", "--features", ".", "--prompts", "cupl+foo"], "cupl+foo"),
    (["extract-features", "--dataset-root", ".", "--dataset", "mnist", "--out", "x"],
     "'mnist'"),
    (["extract-features", "--dataset-root", "/nonexistent", "--dataset", "dtd", "--out", "x"],
     "/nonexistent"),
    (["extract-features", "--dataset-root", ".", "--dataset", "dtd", "--out", "x",
      "--batch-size", "0"], "--batch-size"),
    (["demo", "--device", "tpu"], "argument --device: device='tpu'"),
    (["benchmark", "--features", ".", "--methods", "cmm", "--device", "tpu"],
     "argument --device: device='tpu'"),
    ([*_EXTRACT, "--device", "tpu"], "argument --device: device='tpu'"),
    (["demo", "--out", _UNDER_A_FILE], f"argument --out: {_UNDER_A_FILE!r}"),
    (["benchmark", "--features", ".", "--out", _UNDER_A_FILE],
     f"argument --out: {_UNDER_A_FILE!r}"),
    ([*_EXTRACT[:-1], _UNDER_A_FILE], f"argument --out: {_UNDER_A_FILE!r}"),
])
def test_a_wrong_argument_exits_2_with_one_line_before_any_work(argv, problem, capsys,
                                                                 monkeypatch):
    for module in (demo, runner, extract):
        monkeypatch.setattr(module, "run", _fail)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err and f"sklearn-cmm {argv[0]}" in err


@pytest.mark.parametrize("argv", [
    ["demo"], ["benchmark", "--features", "."], _EXTRACT,
])
def test_device_cuda_without_cuda_exits_2_before_any_work(argv, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for module in (demo, runner, extract):
        monkeypatch.setattr(module, "run", _fail)
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--device", "cuda"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --device: device='cuda'" in err


def test_out_is_checked_without_making_anything(tmp_path, monkeypatch):
    out = tmp_path / "new" / "folder"
    assert report.writable_dir(str(out)) == out
    assert list(tmp_path.iterdir()) == []  # made by the run, after its work
    monkeypatch.setattr(report.os, "access", lambda path, mode: False)  # root writes anywhere
    with pytest.raises(argparse.ArgumentTypeError, match="is not writable"):
        report.writable_dir(str(out))


class _Started(Exception):
    """The work began: every argument check passed."""


def _start(*args, **kwargs):
    raise _Started


@pytest.mark.parametrize("shots", ["1,{n}", "{n}", "1000"])
def test_demo_checks_shots_against_the_class_sizes_before_any_work(shots, capsys, monkeypatch):
    n = np.bincount(load_fashion_mnist_sample().target).min()
    monkeypatch.setattr(demo, "_pipeline_check", _fail)
    shots = shots.format(n=n)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--shots", shots, "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--shots {shots.removeprefix('1,')}:" in err
    assert f"at most {n - 1} shots" in err
    monkeypatch.setattr(demo, "_pipeline_check", _start)
    with pytest.raises(_Started):  # one test image a class is enough
        main(["demo", "--shots", f"1,{n - 1}", "--quiet"])


@pytest.mark.parametrize("extra, problem", [
    (["--model", "NoSuchModel"], "--model: Unknown CLIP model 'NoSuchModel'"),
    (["--model", "/nonexistent.json"], "--model: Cannot read the model config"),
    (["--pretrained", "/nonexistent.pt"], "--pretrained: pretrained='/nonexistent.pt'"),
    (["--model", "ViT-B-16", "--pretrained", "no-such-tag"], "tags: openai"),
])
def test_extract_checks_model_and_weights_before_any_work(extra, problem, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.setattr(extract, "extract_dataset", _fail)
    with pytest.raises(SystemExit) as exit_info:
        main(["extract-features", "--dataset-root", str(tmp_path), "--dataset", "dtd",
              "--out", str(tmp_path / "out"), *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err
    assert not (tmp_path / "out").exists()


def test_extract_accepts_a_model_config_and_checkpoint_file(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setattr(extract, "extract_dataset", _start)
    with pytest.raises(_Started):
        main(["extract-features", "--dataset-root", str(tmp_path), "--dataset", "dtd",
              "--out", str(tmp_path), "--model", str(tiny_clip.config_path),
              "--pretrained", str(tiny_clip.checkpoint)])


@pytest.fixture(scope="module")
def tiny_features(tmp_path_factory):
    folder = tmp_path_factory.mktemp("features")
    make_synthetic_features(folder, ["eurosat"], dim=16, n_classes=4,
                            caps={"train": 8, "val": 4, "test": 6})
    return folder


@pytest.mark.parametrize("extra, problem", [
    ([], "No matching feature file"),
    (["--set", "cmm.no_such_parameter=1"], "no_such_parameter"),
    (["--set", "cmm.alpha=abc"], "--set: The 'alpha' parameter"),
    (["--set", "linear-probe.C=abc"], "--set: The 'C' parameter"),
    (["--set", "cmm.random_state=3"], "--set cmm.random_state: the runner sets"),
    (["--set", "semobridge-t.device=cpu"], "--set semobridge-t.device: the runner sets"),
    (["--distribution-shift"], "--distribution-shift needs the features of ImageNet"),
])
def test_benchmark_checks_files_and_parameters_before_any_work(extra, problem, tmp_path,
                                                               tiny_features, capsys,
                                                               monkeypatch):
    monkeypatch.setattr(runner, "evaluate", _fail)
    monkeypatch.setattr(runner, "plan", _fail)
    features = tiny_features if extra else tmp_path
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--features", str(features), *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err


@pytest.mark.parametrize("datasets", [["imagenet"], ["imagenet", "imagenet_v2"]])
def test_distribution_shift_needs_a_variant_before_any_work(datasets, tmp_path, capsys,
                                                            monkeypatch):
    make_synthetic_features(tmp_path, datasets, dim=16, n_classes=4,
                            caps={"train": 8, "val": 4, "test": 6})
    monkeypatch.setattr(runner, "evaluate", _fail)
    monkeypatch.setattr(runner, "plan", _fail)
    with pytest.raises(SystemExit) as exit_info:  # the variant filtered out, or none
        main(["benchmark", "--features", str(tmp_path), "--distribution-shift",
              "--datasets", "imagenet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least one of its variants" in err


@pytest.mark.parametrize("shots, fails", [(7, False), (8, True)])
def test_benchmark_checks_every_draw_has_validation_images_before_any_work(
        shots, fails, tmp_path, capsys, monkeypatch):
    # ImageNet has no val split: its validation images are the 8 training images a class
    # not drawn as shots, none at 8 shots
    make_synthetic_features(tmp_path, ["imagenet"], dim=16, n_classes=4,
                            caps={"train": 8, "val": 4, "test": 6})
    monkeypatch.setattr(runner, "evaluate", _fail)
    monkeypatch.setattr(runner, "plan", _fail)
    argv = ["benchmark", "--features", str(tmp_path), "--shots", f"1,{shots}"]
    if not fails:
        with pytest.raises(AssertionError, match="heavy work started"):
            main(argv)
        return
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "imagenet, 8 shots, seed 1: no validation images of 4 of the 4 classes" in err


def test_benchmark_results_of_two_models_go_to_two_folders_by_default(tmp_path):
    for model in ("RN50", "ViT-B-16"):
        make_synthetic_features(tmp_path, ["eurosat"], dim=16, n_classes=4, model=model,
                                caps={"train": 8, "val": 4, "test": 6})
        assert main(["benchmark", "--features", str(tmp_path), "--model", model,
                     "--methods", "zero-shot", "--shots", "1", "--seeds", "1",
                     "--quiet"]) == 0
    for model in ("RN50", "ViT-B-16"):
        record = json.loads((tmp_path / "benchmark" / f"{model}__synthetic" /
                             "results.json").read_text())
        assert record["model"] == model


def test_benchmark_checks_its_default_out_before_any_work(tmp_path, capsys, monkeypatch):
    make_synthetic_features(tmp_path, ["eurosat"], dim=16, n_classes=4,
                            caps={"train": 8, "val": 4, "test": 6})
    (tmp_path / "benchmark").write_text("")  # FEATURES/benchmark cannot be a folder
    monkeypatch.setattr(runner, "evaluate", _fail)
    monkeypatch.setattr(runner, "plan", _fail)
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--features", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out:" in err and "is a file" in err


def test_benchmark_prints_its_cost_first_and_flags_synthetic_features(tiny_features,
                                                                      tmp_path, capsys):
    assert main(["benchmark", "--features", str(tiny_features), "--methods", "zero-shot",
                 "--shots", "1", "--seeds", "1", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Plan: 1 dataset(s) x 1 shot count(s) x 1 seed(s) x 1 method(s)")
    assert "SYNTHETIC" in out and "difference*" in out


def test_plan_counts_semobridge_t_steps_and_says_how_to_shorten():
    metadata = {"imagenet": {"n_classes": 1000}, "eurosat": {"n_classes": 10}}
    steps = SeMoBridgeClassifier().max_iter
    fits = 2 * 2 * 3 * len(search_space("semobridge-t"))  # datasets x shots x seeds
    lines = runner.plan(metadata, ["imagenet", "eurosat"], ["zero-shot", "semobridge-t"],
                        [1, 16], [1, 2, 3], {})
    text = " ".join(lines)
    assert f"{steps} steps a fit, {steps * fits:,} steps in all" in text
    assert "--set semobridge-t.max_iter=" in text and "--methods" in text
    shorter = " ".join(runner.plan(metadata, ["eurosat"], ["semobridge-t"], [1], [1],
                                   {"semobridge-t": {"max_iter": 7}}))
    assert "7 steps a fit" in shorter and "1000 classes would take" not in shorter


def test_synthetic_generator_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        synthetic.main(["--help"])
    options = capsys.readouterr().out.split("options:")[1]
    entries = re.split(r"\n  (?=-)", options)[2:]  # after "-h, --help"
    assert len(entries) == 7
    for entry in entries:
        assert len(entry.split()) > 3, entry  # the option, its metavar, then words


def test_python_dash_m_without_subcommand_fails_with_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "sklearn_cmm"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("sklearn-cmm: error:")
    assert "{demo,extract-features,benchmark}" in result.stderr


def test_help_does_not_import_torch():
    code = ("import sys\nfrom sklearn_cmm.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\n"
            "print([m for m in ('torch', 'open_clip') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip().endswith("[]")
