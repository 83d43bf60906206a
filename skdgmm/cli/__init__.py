"""The command line: ``skdgmm demo`` and ``skdgmm segment`` (also
``python -m skdgmm``).

The commands use only the public API of skdgmm; :func:`main` is the
console-script entry point.
"""

import argparse
import sys

from .. import __version__
from . import demo, segment
from .options import UsageError
from .segment import INTERRUPTED

__all__ = ["main"]


def build_parser():
    """The ``skdgmm`` argument parser and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="skdgmm",
        description="Unsupervised image segmentation with deep Gaussian mixtures.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo.add_parser(commands)
    segment.add_parser(commands)
    return parser


def main(argv=None):
    """Run the command line on ``argv`` (``sys.argv[1:]`` by default).

    Returns the exit status: 0, or 130 after a Ctrl-C. Usage errors exit
    with status 2 and a message (argparse's ``SystemExit``).
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except UsageError as error:
        args.parser.error(str(error))  # the usage and message, exit status 2
    except KeyboardInterrupt:
        print(f"{args.parser.prog}: interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED
