"""``skdgmm segment``: read images, fit one DeepGaussianMixture, write label maps.

Only argument handling and the order of the steps live here; files are read
and written by :mod:`.io`, pictures drawn by :mod:`.pictures`, and the
segmentation is the estimator's.
"""

import os
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from . import pictures
from .io import (
    OUTSIDE,
    file_stem,
    labels_path,
    read_images,
    read_label_maps,
    read_masks,
    to_uint8,
    write_all,
    write_labels,
)
from .options import UsageError, add_estimator_options, positive_int

# the exit status of a command stopped by Ctrl-C (128 + SIGINT)
INTERRUPTED = 130


def _outputs(image, out_dir, overlay):
    """``{"labels": path, "preview": path[, "overlay": path]}`` of one image."""
    path, suffix = image.file.path, pictures.picture_suffix(pictures.shown_slice(image))
    stem = out_dir / file_stem(path)
    outputs = {
        "labels": labels_path(path, out_dir),
        "preview": Path(f"{stem}_preview{suffix}.png"),
    }
    if overlay:
        outputs["overlay"] = Path(f"{stem}_overlay{suffix}.png")
    return outputs


def _check_outputs(outputs, force):
    """Before any training, so that a long training is never thrown away."""
    flat = [path for paths in outputs for path in paths.values()]
    if len(set(flat)) != len(flat):
        raise UsageError("two inputs have the same file name; outputs would collide")
    existing = [str(path) for path in flat if path.exists()]
    if existing and not force:
        raise UsageError(
            f"output exists (use --force to overwrite): {', '.join(existing)}"
        )


def _fit_predict(model, images, masks, partial_labels):
    """The labels, and whether training was interrupted (Ctrl-C). Labels are
    None when no model was kept; the estimator's other warnings are shown."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            labels = model.fit_predict(images, mask=masks, labels=partial_labels)
        except KeyboardInterrupt:  # before the estimator had a model to keep
            labels = None
        except ValueError as error:  # the estimator's checks of data and device
            raise UsageError(str(error)) from None
    interrupted = labels is None
    for warning in caught:
        message = str(warning.message)
        if message.startswith("Training was interrupted"):
            interrupted = True
        elif issubclass(warning.category, ConvergenceWarning):
            print(
                f"warning: training did not converge in {model.max_iter} "
                f"iterations (raise --max-iter for a closer fit)",
                file=sys.stderr,
            )
        elif issubclass(warning.category, UserWarning):
            print(f"warning: {message}", file=sys.stderr)
    return labels, interrupted


def _partial_labels(data, label_maps, masks, spatial_dims, n_components):
    """The label maps of the first images as partial labels of all of
    ``data`` (-1 for the other images, and outside the masks), or None
    without label maps."""
    from ..priors import check_labels

    if label_maps is None:
        return None
    labels = np.full(data.shape[: 1 + spatial_dims], -1, dtype=np.int64)
    known = np.concatenate(label_maps)
    labels[: len(known)] = known
    if masks is not None:
        labels = np.where(np.concatenate(masks), labels, -1)
    try:
        return check_labels(labels, labels.shape, n_components)
    except ValueError as error:
        raise UsageError(f"--labels: {error}") from None


def segment(args):
    """Fit one DeepGaussianMixture on all images of ``args``, write label maps."""
    from .. import DeepGaussianMixture

    out_dir = args.output
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a directory")
    if args.n_components > OUTSIDE:
        raise UsageError(
            f"label maps are uint8: at most {OUTSIDE} components; got "
            f"-k {args.n_components}"
        )
    images, spatial_dims = read_images(args.images, args.spatial_dims)
    masks = read_masks(args.mask, images, spatial_dims)
    label_maps = read_label_maps(args.labels, images, spatial_dims, args.n_components)
    outputs = [_outputs(image, out_dir, args.overlay) for image in images]
    _check_outputs(outputs, args.force)
    for image in images:
        for note in image.notes():
            print(f"{image.file.path}: {note}")

    data = np.concatenate([image.data for image in images]).astype(np.float64)
    model = DeepGaussianMixture(
        args.n_components,
        spatially_variant=args.spatially_variant,
        spatial_dims=spatial_dims,
        # the files' axes say where the channels are
        channel_axis=-1 if data.ndim == spatial_dims + 2 else None,
        max_iter=args.max_iter,
        random_state=args.random_state,
        device=args.device,
        verbose=int(args.verbose),
    )
    partial_labels = _partial_labels(
        data, label_maps, masks, spatial_dims, args.n_components
    )
    slices = sum(image.slice_axis is not None for image in images)
    what = (
        f"{len(data)} 2-D slices (from {len(images)} file(s))"
        if slices
        else f"{len(data)} image(s)"
    )
    print(
        f"Training one model (K={args.n_components}) on {what} of shape "
        f"{data.shape[1:]}: class k means the same in every label map."
    )
    if label_maps is not None:
        print(
            f"Classes from the label maps of the first {len(label_maps)} "
            f"image(s) (--labels): class k is their class k."
        )
    start = time.perf_counter()
    labels, interrupted = _fit_predict(
        model, data, None if masks is None else np.concatenate(masks), partial_labels
    )
    if interrupted and (labels is None or not args.keep_interrupted):
        print(
            "skdgmm segment: training was interrupted (Ctrl-C); nothing written"
            + (
                " (no model to keep)"
                if labels is None
                else " (pass --keep-interrupted to write the labels of the "
                "interrupted model)"
            ),
            file=sys.stderr,
        )
        return INTERRUPTED
    print(
        f"Trained on {model.device_} in {time.perf_counter() - start:.1f} s "
        f"({model.n_iter_} iterations)."
    )
    if interrupted:
        print(
            f"skdgmm segment: training was interrupted (Ctrl-C) after "
            f"{model.n_iter_} iterations; writing the labels of the interrupted "
            f"model (--keep-interrupted)",
            file=sys.stderr,
        )
    _write(images, labels, outputs, out_dir)
    print(pictures.legend(args.n_components))
    return 0


def _write(images, labels, outputs, out_dir):
    """Every image's label map, preview and overlay; all of them or none."""
    writers, shown, start = [], [], 0
    for image, paths in zip(images, outputs):
        own = image.to_file(labels[start : start + len(image.data)])
        start += len(image.data)
        where = pictures.shown_slice(image)
        label_map = to_uint8(own)
        affine = image.file.affine
        writers.append(
            (paths["labels"], partial(write_labels, labels=label_map, affine=affine))
        )
        writers.append(
            (
                paths["preview"],
                partial(pictures.write_preview, labels=label_map, where=where),
            )
        )
        if "overlay" in paths:
            overlay = partial(
                pictures.write_overlay,
                image=image.to_file(image.data),
                labels=own,
                where=where,
            )
            writers.append((paths["overlay"], overlay))
        # pictures of a volume say which slice they show
        slice_note = (
            ""
            if where is None
            else f" (slice {where[1]} along axis {where[0]} of the label map)"
        )
        shown += [
            f"wrote {path}{'' if kind == 'labels' else slice_note}"
            for kind, path in paths.items()
        ]
    os.makedirs(out_dir, exist_ok=True)
    write_all(writers)
    print("\n".join(shown))


def add_parser(commands):
    """The ``segment`` sub-command of the ``skdgmm`` parser."""
    parser = commands.add_parser(
        "segment",
        help="segment image files; one model is trained on all of them",
        description=(
            "Train one DeepGaussianMixture on all IMAGEs (PNG, TIFF, JPEG or "
            "NIfTI, all of the same shape) and write a uint8 label map per image "
            f"into OUT: component k as k, {OUTSIDE} outside the mask. One model "
            "for the whole study: class k is the same class in every label map "
            "(--labels names the classes). PNG and "
            "JPEG inputs give PNG label maps, TIFF gives TIFF, NIfTI gives "
            "NIfTI with the input's affine. Beside each label map, "
            "<name>_preview.png shows the components in colours (printed at "
            "the end); pictures of a volume show one slice, named in the file "
            "name (e.g. <name>_preview_axis0_slice6.png). The axes of a TIFF "
            "come from the file (ImageJ or OME axes): Z is a spatial axis, C "
            "and S (RGB) are channels; a multi-page TIFF that does not name its "
            "axes is read as a z-stack of its pages (or as one image whose last, "
            "shortest axis holds channels). A NIfTI image is X, Y[, Z], with "
            "channels on a 4th axis. A Ctrl-C during training writes nothing "
            "and exits with status 130, unless --keep-interrupted."
        ),
    )
    parser.add_argument(
        "images", nargs="+", type=Path, metavar="IMAGE", help="input images"
    )
    parser.add_argument(
        "-k",
        "--n-components",
        type=positive_int,
        required=True,
        metavar="K",
        help="number of classes (mixture components)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUT",
        help="output directory",
    )
    _add_input_options(parser)
    parser.add_argument(
        "--spatially-variant",
        action="store_true",
        help="pixel-wise mixing weights (deepSVG)",
    )
    parser.add_argument(
        "--spatial-dims",
        type=int,
        choices=(2, 3),
        help="2 for images, 3 for volumes (default: what the files are: 3 for a "
        "NIfTI volume or a TIFF with a Z axis, else 2). With 2, a volume is "
        "read as a stack of 2-D slices along Z (a NIfTI's last axis), one model "
        "is trained on all slices, and its label map is a volume again; a 2-D "
        "image with 3 is an error",
    )
    parser.add_argument(
        "--max-iter",
        type=positive_int,
        default=200,
        help="maximum training iterations (default: 200)",
    )
    add_estimator_options(parser)
    parser.add_argument("--random-state", type=int, metavar="N", help="seed")
    _add_output_options(parser)
    parser.set_defaults(run=segment, parser=parser)
    return parser


def _add_input_options(parser):
    """The region of interest and the label maps that name the classes."""
    parser.add_argument(
        "--mask",
        nargs="+",
        type=Path,
        metavar="MASK",
        help="region of interest (nonzero inside): one file for all images, or "
        "one per image",
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        type=Path,
        metavar="LABELS",
        help="label maps of the first images, in order, that name the classes: "
        f"class k as k (0 .. K-1), {OUTSIDE} for unlabelled pixels, as segment "
        "writes them. Their images are fitted with their labels (fit's "
        "labels=), so that class k of every label map written is class k of "
        "these",
    )


def _add_output_options(parser):
    """What ``segment`` writes, and when."""
    parser.add_argument(
        "--overlay", action="store_true", help="also write an overlay PNG per image"
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite existing outputs"
    )
    parser.add_argument(
        "--keep-interrupted",
        action="store_true",
        help="after a Ctrl-C during training, write the labels of the model as "
        "it was (by default nothing is written and the exit status is 130)",
    )
