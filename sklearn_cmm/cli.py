"""Command line: ``sklearn-cmm demo | extract-features | benchmark``.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args)``. Building the parser imports those modules, which are light: torch and
open_clip are imported inside ``run``, when a subcommand does its work.
"""

import argparse
import importlib

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


def build_parser():
    """The argument parser with every subcommand's options."""
    parser = argparse.ArgumentParser(
        prog="sklearn-cmm",
        description="Few-shot image classification with CLIP: CMM, SeMoBridge and baselines.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv=None):
    """Entry point of the ``sklearn-cmm`` console script and ``python -m sklearn_cmm``."""
    args = build_parser().parse_args(argv)
    return args.run(args)
