"""``skdgmm segment``: read images, fit one DeepGaussianMixture, write label maps.

Only argument handling and file input/output live here; the segmentation is
the estimator's.
"""

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

# Label maps are uint8 in every format; pixels outside the mask get this value
# (what -1, the estimators' label outside the mask, becomes in uint8).
OUTSIDE = 255


class UsageError(Exception):
    """A problem with the command line or its files, reported without traceback."""


def _format(path):
    """``"nifti"``, ``"tiff"`` or ``"image"`` (what scikit-image reads)."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    return "image"


def _stem(path):
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def _nibabel():
    try:
        import nibabel
    except ImportError as error:
        raise UsageError(
            'reading NIfTI files needs nibabel: pip install "skdgmm[nifti]"'
        ) from error
    return nibabel


def _read(path):
    """The array of an image file, and the NIfTI affine (None otherwise)."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    kind = _format(path)
    if kind == "nifti":
        nibabel = _nibabel()
        try:
            nifti = nibabel.load(path)
            return np.asarray(nifti.dataobj), nifti.affine
        except Exception as error:  # nibabel raises many types on bad files
            raise UsageError(f"{path}: cannot read this NIfTI file ({error})") from None
    from skimage.io import imread

    try:
        image = imread(path)
    except Exception as error:  # the plugins raise many types on bad files
        # the first line says why; imageio adds advice on plugins after it
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(
            f"{path}: cannot read this image ({reason}); PNG, TIFF, JPEG and "
            f"NIfTI (.nii, .nii.gz) are supported"
        ) from None
    if kind == "image" and image.ndim == 3:
        if image.shape[-1] in (2, 4):  # grey or RGB with alpha
            image = image[..., :-1]  # an alpha channel is not an intensity
        if (image == image[..., :1]).all():  # grey saved as colour
            image = image[..., 0]
    return image, None


def _output_paths(path, out_dir, overlay):
    """Where the label map (and overlay) of the input ``path`` go."""
    stem = _stem(path)
    # NIfTI and TIFF keep their suffix; anything else becomes a (lossless) PNG
    suffix = ".png" if _format(path) == "image" else path.name[len(stem) :]
    paths = [out_dir / f"{stem}_labels{suffix}"]
    if overlay:
        paths.append(out_dir / f"{stem}_overlay.png")
    return paths


def _read_images(paths, spatial_dims):
    """The images stacked ``(n, *spatial[, C])`` and each one's affine."""
    images, affines = zip(*(_read(path) for path in paths))
    for path, image in zip(paths, images):
        if image.ndim not in (spatial_dims, spatial_dims + 1):
            raise UsageError(
                f"{path}: expected a {spatial_dims}-D image, with or without a "
                f"channel axis; got an array of shape {image.shape} (use "
                f"--spatial-dims to choose 2-D images or 3-D volumes)"
            )
        if image.shape != images[0].shape:
            raise UsageError(
                f"all images must have the same shape to train one model on "
                f"them: {paths[0]} is {images[0].shape}, {path} is {image.shape}"
            )
    return np.stack(images).astype(np.float64), affines


def _read_masks(paths, images, spatial_dims):
    """One boolean mask per image (nonzero = inside) from one or n files."""
    if paths is None:
        return None
    if len(paths) not in (1, len(images)):
        raise UsageError(
            f"give one mask for all images or one per image; got {len(paths)} "
            f"masks for {len(images)} images"
        )
    spatial = images.shape[1 : 1 + spatial_dims]
    masks = []
    for path in paths:
        mask = _read(path)[0]
        if mask.shape[:-1] == spatial:  # e.g. a mask saved as RGB
            mask = mask.any(-1)
        if mask.shape != spatial:
            raise UsageError(
                f"{path}: the mask has shape {mask.shape}, the images "
                f"{spatial}; they must match"
            )
        masks.append(mask != 0)
    if len(masks) == 1:
        masks = masks * len(images)
    return np.stack(masks)


def _write_labels(path, labels, affine):
    if _format(path) == "nifti":
        nibabel = _nibabel()
        nibabel.save(nibabel.Nifti1Image(labels, affine), path)
        return
    from skimage.io import imsave

    imsave(path, labels, check_contrast=False)


def _write_overlay(path, image, labels, spatial_dims):
    """PNG of the labels over the image; of a volume, its middle slice across
    the shortest axis (the slice direction of most scans)."""
    from skimage.io import imsave

    from .plotting import _overlay_rgb

    if spatial_dims == 3:
        axis = int(np.argmin(labels.shape))
        middle = labels.shape[axis] // 2
        image = np.take(image, middle, axis=axis)
        labels = np.take(labels, middle, axis=axis)
    picture = _overlay_rgb(image, labels)
    imsave(path, (picture * 255).round().astype(np.uint8), check_contrast=False)


def segment(args):
    """Fit one DeepGaussianMixture on all images of ``args``, write label maps."""
    from . import DeepGaussianMixture

    paths, out_dir = args.images, args.output
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a directory")
    if args.n_components > OUTSIDE:
        raise UsageError(
            f"label maps are uint8: at most {OUTSIDE} components; got "
            f"-k {args.n_components}"
        )
    spatial_dims = args.spatial_dims
    if spatial_dims is None:
        spatial_dims = 3 if _format(paths[0]) == "nifti" else 2
    outputs = [_output_paths(path, out_dir, args.overlay) for path in paths]
    # checked before any work, so that a long training is never thrown away
    flat = [output for pair in outputs for output in pair]
    if len(set(flat)) != len(flat):
        raise UsageError("two inputs have the same file name; outputs would collide")
    existing = [str(output) for output in flat if output.exists()]
    if existing and not args.force:
        raise UsageError(
            f"output exists (use --force to overwrite): {', '.join(existing)}"
        )

    images, affines = _read_images(paths, spatial_dims)
    masks = _read_masks(args.mask, images, spatial_dims)
    model = DeepGaussianMixture(
        args.n_components,
        spatially_variant=args.spatially_variant,
        spatial_dims=spatial_dims,
        max_iter=args.max_iter,
        random_state=args.random_state,
        device=args.device,
    )
    print(
        f"Training one model (K={args.n_components}) on {len(paths)} image(s) "
        f"of shape {images.shape[1:]} ..."
    )
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            labels = model.fit_predict(images, mask=masks)
    except ValueError as error:  # the estimator's checks of data and device
        raise UsageError(str(error)) from None
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        print(
            f"warning: training did not converge in {args.max_iter} iterations "
            f"(raise --max-iter for a closer fit)"
        )
    print(
        f"Trained on {model.device_} in {time.perf_counter() - start:.1f} s "
        f"({model.n_iter_} iterations)."
    )

    os.makedirs(out_dir, exist_ok=True)
    for i, (image, affine) in enumerate(zip(images, affines)):
        # -1 outside the mask becomes OUTSIDE
        _write_labels(outputs[i][0], labels[i].astype(np.uint8), affine)
        print(f"wrote {outputs[i][0]}")
        if args.overlay:
            _write_overlay(outputs[i][1], image, labels[i], spatial_dims)
            print(f"wrote {outputs[i][1]}")


def add_segment_parser(commands):
    """The ``segment`` sub-command of the ``skdgmm`` parser."""
    parser = commands.add_parser(
        "segment",
        help="segment image files; one model is trained on all of them",
        description=(
            "Train one DeepGaussianMixture on all IMAGEs (PNG, TIFF, JPEG or "
            "NIfTI, all of the same shape) and write a uint8 label map per image "
            f"into OUT: component k as k, {OUTSIDE} outside the mask. PNG and "
            "JPEG inputs give PNG label maps, TIFF gives TIFF, NIfTI gives "
            "NIfTI with the input's affine."
        ),
    )
    parser.add_argument(
        "images", nargs="+", type=Path, metavar="IMAGE", help="input images"
    )
    parser.add_argument(
        "-k",
        "--n-components",
        type=_positive_int,
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
    parser.add_argument(
        "--mask",
        nargs="+",
        type=Path,
        metavar="MASK",
        help="region of interest (nonzero inside): one file for all images, or "
        "one per image",
    )
    parser.add_argument(
        "--spatially-variant",
        action="store_true",
        help="pixel-wise mixing weights (deepSVG)",
    )
    parser.add_argument(
        "--spatial-dims",
        type=int,
        choices=(2, 3),
        help="2 for images, 3 for volumes (default: 3 for NIfTI, else 2)",
    )
    parser.add_argument(
        "--max-iter",
        type=_positive_int,
        default=100,
        help="maximum training iterations (default: 100)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    parser.add_argument("--random-state", type=int, metavar="N", help="seed")
    parser.add_argument(
        "--overlay", action="store_true", help="also write an overlay PNG per image"
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite existing outputs"
    )
    parser.set_defaults(run=segment, parser=parser)
    return parser


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
