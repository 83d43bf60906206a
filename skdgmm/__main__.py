"""Command line: ``skdgmm demo`` and ``skdgmm segment`` (also ``python -m skdgmm``)."""

import argparse
import sys
import time

import numpy as np

from ._cli import UsageError, add_segment_parser


def _demo(args):
    from sklearn.mixture import GaussianMixture

    from . import DeepGaussianMixture
    from .datasets import load_nuclei
    from .metrics import dice_score, match_labels

    image, truth = load_nuclei()
    print("Segmenting the bundled nuclei image (256x256, K=2) ...")
    rows = []
    for name, segment in [
        (
            "DeepGaussianMixture",
            lambda: DeepGaussianMixture(
                2, random_state=0, device=args.device
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
        from skimage.io import imsave

        imsave(args.output, (deep_labels * 255).astype(np.uint8), check_contrast=False)
        print(f"Label map written to {args.output}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="skdgmm",
        description="Unsupervised image segmentation with deep Gaussian mixtures.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="segment the bundled sample image and compare with EM"
    )
    demo.add_argument("-o", "--output", help="write the label map to this PNG file")
    demo.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    demo.set_defaults(run=_demo, parser=demo)
    add_segment_parser(commands)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except UsageError as error:
        args.parser.error(str(error))  # the usage and message, exit status 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
