"""What the commands share: the error they report, argument types, common options."""

import argparse


class UsageError(Exception):
    """A problem with the command line or its files, reported without traceback."""


def positive_int(text):
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_estimator_options(parser):
    """``--device`` and ``--verbose``, passed to the estimator as they are."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show a progress bar of the training (the estimator's verbose=1)",
    )
