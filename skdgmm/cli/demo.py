"""``skdgmm demo``: segment the bundled nuclei image, compare with EM."""

import time
from functools import partial
from pathlib import Path

from . import pictures
from .io import to_uint8, write_all, write_labels
from .options import add_estimator_options


def demo(args):
    """Segment the bundled image with both models, print Dice and times."""
    from sklearn.mixture import GaussianMixture

    from .. import DeepGaussianMixture
    from ..datasets import load_nuclei
    from ..metrics import dice_score, match_labels

    image, truth = load_nuclei()
    height, width = image.shape
    print(f"Segmenting the bundled nuclei image ({height}x{width}, K=2) ...")
    rows = []
    for name, segment in [
        (
            "DeepGaussianMixture",
            lambda: DeepGaussianMixture(
                2, random_state=0, device=args.device, verbose=int(args.verbose)
            ).fit_predict(image[None])[0],
        ),
        (
            "GaussianMixture",
            lambda: (
                GaussianMixture(2, random_state=0)
                .fit_predict(image.reshape(-1, 1))
                .reshape(image.shape)
            ),
        ),
    ]:
        start = time.perf_counter()
        labels = segment()
        seconds = time.perf_counter() - start
        matched = match_labels(truth, labels, labels=[0, 1], clusters=[0, 1])
        rows.append((name, dice_score(truth, matched, [1])[0], seconds))
        if name == "DeepGaussianMixture":
            deep_labels = matched
    print(f"{'method':<22}{'nucleus Dice':>14}{'seconds':>10}")
    for name, dice, seconds in rows:
        print(f"{name:<22}{dice:>14.3f}{seconds:>10.2f}")
    if args.output:
        # the encoding of `skdgmm segment`: 0 background, 1 nucleus
        label_map = to_uint8(deep_labels)
        preview = args.output.with_name(f"{args.output.stem}_preview.png")
        write_all(
            [
                (args.output, partial(write_labels, labels=label_map)),
                (preview, partial(pictures.write_preview, labels=label_map)),
            ]
        )
        print(f"Label map written to {args.output} (0 background, 1 nucleus)")
        print(f"Preview written to {preview} ({pictures.legend(2)})")


def add_parser(commands):
    """The ``demo`` sub-command of the ``skdgmm`` parser."""
    parser = commands.add_parser(
        "demo", help="segment the bundled sample image and compare with EM"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="write the label map (0 background, 1 nucleus) to this PNG file, "
        "and a colour preview beside it (<name>_preview.png)",
    )
    add_estimator_options(parser)
    parser.set_defaults(run=demo, parser=parser)
    return parser
