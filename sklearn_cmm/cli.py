"""Command line: ``sklearn-cmm demo | extract-features | benchmark``.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args)``; its docstring, as plain text, is the subcommand's ``--help`` description.
Building the parser imports those modules, which are light: torch and open_clip are
imported inside ``run``, when a subcommand does its work. Arguments are checked before
any work: a wrong one ends the command with one line on stderr and exit status 2.
"""

import argparse
import importlib
import re
import textwrap

from .protocol.report import UsageError

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "demo": (
        "sklearn_cmm.protocol.demo",
        "compare every method on the bundled model and images, offline",
    ),
    "extract-features": (
        "sklearn_cmm.protocol.extract",
        "cache CLIP features of a few-shot benchmark dataset (CoOp layout)",
    ),
    "benchmark": (
        "sklearn_cmm.protocol.runner",
        "run the few-shot protocol on cached features and compare with the papers",
    ),
}

# :class:`~a.b.C` -> C, :mod:`a.b` -> a.b, :func:`title <target>` -> title
_ROLE = re.compile(r":(?:\w+:)*\w+:`(~?)([^`<]*?)\s*(?:<[^`>]*>)?`")


def plain_text(docstring):
    """A reStructuredText docstring as plain text: Sphinx roles and literals unmarked."""

    def role(match):
        tilde, target = match.groups()
        return target.rsplit(".", 1)[-1] if tilde else target

    text = _ROLE.sub(role, docstring)
    return text.replace("``", "").strip()


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps text at spaces only, so ``--long-options`` and paths stay whole, and keeps
    the description's paragraphs (blank lines) and bulleted items (``* ``)."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False,
                             break_long_words=False)

    def _fill_text(self, text, width, indent):
        blocks = []
        for paragraph in text.split("\n\n"):
            items = re.split(r"\n(?=\* )", paragraph)
            blocks.append("\n".join(
                textwrap.fill(" ".join(item.split()), width, initial_indent=indent,
                              subsequent_indent=indent + "  " * item.startswith("* "),
                              break_on_hyphens=False, break_long_words=False)
                for item in items))
        return "\n\n".join(blocks)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: the problem and where to look."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    """The argument parser with every subcommand's options."""
    parser = _Parser(
        prog="sklearn-cmm",
        description="Few-shot image classification with CLIP: CMM, SeMoBridge and baselines.",
        formatter_class=_HelpFormatter,
    )
    subparsers = parser.add_subparsers(required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=plain_text(module.__doc__),
                                    formatter_class=_HelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run, usage_error=sub.error)
    return parser


def main(argv=None):
    """Entry point of the ``sklearn-cmm`` console script and ``python -m sklearn_cmm``.

    Parameters
    ----------
    argv : list of str or None, default=None
        The arguments after the program's name; None reads ``sys.argv[1:]``.

    Returns
    -------
    status : int
        The exit status: 0 on success (a wrong argument exits with 2 instead).
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:  # found by the subcommand, before its work
        args.usage_error(str(error))
