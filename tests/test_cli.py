import re
import subprocess
import sys

import pytest

from sklearn_cmm.cli import SUBCOMMANDS, build_parser, main, plain_text
from sklearn_cmm.protocol import demo, extract, runner, synthetic
from sklearn_cmm.protocol.methods import search_space
from sklearn_cmm.protocol.synthetic import make_synthetic_features
from sklearn_cmm.semobridge import SeMoBridgeClassifier

# what reStructuredText and Sphinx leave in text: roles, double back-quotes
_MARKUP = re.compile(r":\w+:`|``")


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


@pytest.fixture(scope="module")
def tiny_features(tmp_path_factory):
    folder = tmp_path_factory.mktemp("features")
    make_synthetic_features(folder, ["eurosat"], dim=16, n_classes=4,
                            caps={"train": 8, "val": 4, "test": 6})
    return folder


@pytest.mark.parametrize("extra, problem", [
    ([], "No matching feature file"),
    (["--set", "cmm.no_such_parameter=1"], "no_such_parameter"),
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
