"""``skdgmm demo``: one deep model for a collection of images, beside EM per image.

The same synthetic images are segmented three ways: scikit-learn's
``GaussianMixture`` fitted on each image, the same with its posteriors
smoothed, and one ``DeepGaussianMixture`` fitted on the whole collection.
Per image, smoothed EM is usually as good and much faster; what the deep
model adds is one model for all images: the same class numbers everywhere,
and new images labelled in one forward pass.
"""

import textwrap
import time
from functools import partial
from pathlib import Path

import numpy as np

from . import pictures
from .io import to_uint8, write_all, write_labels
from .options import add_estimator_options

# The collection: small, so that the deep model trains on a CPU in seconds
# (the tests shrink it further). The noise makes EM's labels noisy per pixel.
N_IMAGES = 8
N_NEW = 4
SHAPE = (64, 64)
N_CLASSES = 3
NOISE = 0.6
# pixels, of the Gaussian filter on EM's posteriors (the baseline of docs/quality)
SIGMA = 2.0
# smoothed EM counts as "as good" within this much mean Dice of the deep model
TIE = 0.01


def _em_per_image(images, smooth):
    """Labels of GaussianMixture fitted on each image alone; with ``smooth``,
    the argmax of its posteriors filtered by a Gaussian of SIGMA pixels."""
    from scipy import ndimage
    from sklearn.mixture import GaussianMixture

    labels = []
    for image in images:
        pixels = image.reshape(-1, 1)
        model = GaussianMixture(N_CLASSES, random_state=0).fit(pixels)
        proba = model.predict_proba(pixels).reshape(*image.shape, N_CLASSES)
        if smooth:
            proba = ndimage.gaussian_filter(proba, (SIGMA, SIGMA, 0))
        labels.append(proba.argmax(-1))
    return np.array(labels)


def _naming(truth, labels):
    """``names[cluster]``, the class each cluster overlaps best over all of
    ``labels`` (Hungarian matching on Dice); -1 for a cluster never used."""
    from ..metrics import match_labels

    classes = list(range(N_CLASSES))
    names = np.full(N_CLASSES, -1)
    names[labels] = match_labels(truth, labels, classes, classes)
    return names


def _mean_dice(truth, named):
    """Dice averaged over classes, then over images (a class absent from both
    the truth and the labels of an image scores 1 there)."""
    from ..metrics import dice_score

    classes = list(range(N_CLASSES))
    return float(
        np.mean(
            [
                np.nan_to_num(dice_score(t, p, classes), nan=1.0)
                for t, p in zip(truth, named)
            ]
        )
    )


def _say(text):
    print(textwrap.fill(text, width=88))


def _timed(segment):
    start = time.perf_counter()
    labels = segment()
    return labels, time.perf_counter() - start


def _verdict(smoothed, deep, speedup):
    """The demo's conclusion, in one sentence that follows its figures."""
    if smoothed > deep - TIE:
        which = "better" if smoothed >= deep + TIE else "as good"
        em = (
            f"Per image, EM with smoothed posteriors is {which} here "
            f"({smoothed:.3f} against {deep:.3f} mean Dice) and {speedup:.0f}x "
            f"faster"
        )
    else:
        em = (
            f"Here the deep model is ahead ({deep:.3f} against {smoothed:.3f} "
            f"mean Dice for EM with smoothed posteriors, which is {speedup:.0f}x "
            f"faster and often as good per image)"
        )
    return (
        f"{em}; what the deep model gives is one model for the whole "
        f"collection: the same class numbers in every image without "
        f"re-matching, and new images labelled in one forward pass."
    )


def _picture_rows(images, truth, methods):
    """Rows of RGB tiles: the images, the truth, then each method's labels
    (the last item of each of ``methods``)."""
    low, high = images.min(), images.max()
    grey = np.round(255 * (images - low) / (high - low)).astype(np.uint8)
    rows = [[np.repeat(image[..., None], 3, -1) for image in grey]]
    for labels in [truth, *(method[-1] for method in methods)]:
        rows.append([pictures.preview_rgb(to_uint8(label)) for label in labels])
    return rows


def demo(args):
    """Segment a synthetic collection three ways; print Dice, times and what
    they show; write a picture (and, with ``-o``, the deep model's labels)."""
    from .. import DeepGaussianMixture
    from ..datasets import make_segmentation_images

    images, truth = make_segmentation_images(
        N_IMAGES + N_NEW, SHAPE, n_classes=N_CLASSES, noise=NOISE, random_state=0
    )
    images, new_images = images[:N_IMAGES], images[N_IMAGES:]
    truth, new_truth = truth[:N_IMAGES], truth[N_IMAGES:]
    height, width = SHAPE
    _say(
        f"A collection of {N_IMAGES} synthetic {height}x{width} images, "
        f"{N_CLASSES} classes, noise {NOISE} (small, so that the deep model "
        f"trains in seconds on a CPU), segmented three ways:"
    )

    em, em_seconds = _timed(partial(_em_per_image, images, smooth=False))
    smoothed, smoothed_seconds = _timed(partial(_em_per_image, images, smooth=True))
    model = DeepGaussianMixture(
        N_CLASSES, random_state=0, device=args.device, verbose=int(args.verbose)
    )
    deep, deep_seconds = _timed(partial(model.fit_predict, images))
    new_labels, new_seconds = _timed(partial(model.predict, new_images))

    # EM's cluster numbers are arbitrary in each image: each is matched to
    # the classes on its own. The deep model's clusters are named once, on
    # the collection, and the same names serve the new images.
    em_names = [_naming(t, labels) for t, labels in zip(truth, em)]
    deep_names = _naming(truth, deep)
    methods = [
        (
            "GaussianMixture",
            "each image",
            "per image",
            em_seconds,
            [names[labels] for names, labels in zip(em_names, em)],
        ),
        (
            f"GaussianMixture, smoothed (sigma={SIGMA:g} px)",
            "each image",
            "per image",
            smoothed_seconds,
            [_naming(t, labels)[labels] for t, labels in zip(truth, smoothed)],
        ),
        (
            "DeepGaussianMixture",
            "the collection",
            "once",
            deep_seconds,
            deep_names[deep],
        ),
    ]
    dice = _print_table(truth, methods)
    renumbered = sum((names != em_names[0]).any() for names in em_names[1:])
    _say(
        f"GaussianMixture numbered the classes otherwise than in the first "
        f"image in {renumbered} of the other {N_IMAGES - 1} images."
    )
    new_dice = _mean_dice(new_truth, deep_names[new_labels])
    _say(
        f"{N_NEW} new images, labelled by the fitted network in one forward "
        f"pass with the collection's class numbers: mean Dice {new_dice:.3f} "
        f"in {new_seconds:.2f} s."
    )
    _say(_verdict(dice[1], dice[2], deep_seconds / smoothed_seconds))

    _write_outputs(args, images, truth, methods, deep_names[deep])


def _print_table(truth, methods):
    """Print a row per method; return their mean Dice."""
    columns = "{:<40}{:<16}{:<11}{:>10}{:>9}"
    print(columns.format("method", "fitted on", "matched", "mean Dice", "seconds"))
    dice = []
    for name, fitted_on, matched, seconds, labels in methods:
        dice.append(_mean_dice(truth, labels))
        print(
            columns.format(
                name, fitted_on, matched, f"{dice[-1]:.3f}", f"{seconds:.2f}"
            )
        )
    return dice


def _write_outputs(args, images, truth, methods, deep_labels):
    """Write the picture and, with ``-o``, the deep model's label maps."""
    writers = [
        (
            args.picture,
            partial(pictures.write_grid, rows=_picture_rows(images, truth, methods)),
        )
    ]
    if args.output:
        # the encoding of `skdgmm segment`, the images side by side
        label_map = to_uint8(np.hstack(deep_labels))
        preview = args.output.with_name(f"{args.output.stem}_preview.png")
        writers += [
            (args.output, partial(write_labels, labels=label_map)),
            (preview, partial(pictures.write_preview, labels=label_map)),
        ]
    write_all(writers)
    _say(
        f"Picture written to {args.picture} (rows: the images, their classes, "
        f"then the three methods; {pictures.legend(N_CLASSES)})"
    )
    if args.output:
        _say(
            f"The deep model's label maps written to {args.output} (the images "
            f"side by side, class k as k) and a preview to {preview}"
        )


def add_parser(commands):
    """The ``demo`` sub-command of the ``skdgmm`` parser."""
    parser = commands.add_parser(
        "demo",
        help="segment a synthetic collection with one deep model and with EM per image",
    )
    parser.add_argument(
        "--picture",
        type=Path,
        default=Path("skdgmm_demo.png"),
        help="where to write the PNG of the images and the three segmentations "
        "(default: skdgmm_demo.png in the current directory)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="also write the deep model's label maps (class k as k, the images "
        "side by side) to this PNG file, and a colour preview beside it "
        "(<name>_preview.png)",
    )
    add_estimator_options(parser)
    parser.set_defaults(run=demo, parser=parser)
    return parser
