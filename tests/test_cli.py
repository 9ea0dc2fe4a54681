import subprocess
import sys

import pytest

from sklearn_cmm.cli import SUBCOMMANDS, build_parser


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: sklearn-cmm " + name in capsys.readouterr().out


def test_python_dash_m_without_subcommand_fails_with_usage():
    result = subprocess.run(
        [sys.executable, "-m", "sklearn_cmm"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "usage: sklearn-cmm" in result.stderr
