"""Reading image files into the estimator's layout and writing label maps.

A file is read in two steps. :func:`read_file` gives its array and the names
of its axes, from the file's own description: tifffile's axes of a TIFF
(``"ZCYX"``, ``"YXS"``, ...), the dimensions of a NIfTI image (``X, Y, Z``
and channels on a 4th axis), ``Y, X`` and maybe channels for other formats.
:func:`arrange` then puts it in the layout ``(n, *spatial[, C])`` that the
estimator takes: ``n = 1`` for an image or a volume, or, for a volume read as
2-D images (``--spatial-dims 2``), ``n`` slices along its Z axis (TIFF) or
its last spatial axis (NIfTI, the same axis). Label maps are written back in
the layout of the file, channels left out.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .options import UsageError

# Label maps are uint8 in every format; pixels outside the mask get this value.
OUTSIDE = 255


def file_format(path):
    """``"nifti"``, ``"tiff"`` or ``"image"`` (what scikit-image reads)."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    return "image"


def file_stem(path):
    """The file name without its suffix (both of ``.nii.gz``)."""
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def labels_path(path, out_dir):
    """Where the label map of the input ``path`` goes: NIfTI and TIFF keep
    their suffix, anything else becomes a (lossless) PNG."""
    stem = file_stem(path)
    suffix = ".png" if file_format(path) == "image" else path.name[len(stem) :]
    return Path(out_dir) / f"{stem}_labels{suffix}"


@dataclass
class FileImage:
    """An image file as read: its array, the names of its axes (spatial
    axes, then ``"C"`` if it has channels) and the NIfTI affine."""

    path: Path
    array: np.ndarray
    axes: str
    affine: np.ndarray = None
    note: str = None  # how an ambiguous layout was read

    @property
    def spatial_dims(self):
        return len(self.axes) - ("C" in self.axes)


@dataclass
class Arranged:
    """A file in the estimator's layout ``(n, *spatial[, C])``.

    ``slice_axis`` is the axis of the file's label map that the ``n`` 2-D
    slices were cut along, or None when ``n`` is 1 (an image or a volume).
    """

    file: FileImage
    data: np.ndarray
    slice_axis: int = None

    @property
    def spatial_shape(self):
        """The shape of the file's label map."""
        return self.to_file(self.data[..., 0] if self.channels else self.data).shape

    @property
    def channels(self):
        return "C" in self.file.axes

    def notes(self):
        """What a user should know of how the file was read."""
        notes = [self.file.note] if self.file.note else []
        if self.slice_axis is not None:
            notes.append(
                f"read as a stack of {len(self.data)} 2-D slices along Z, its "
                f"axis {self.slice_axis} (--spatial-dims 2)"
            )
        return notes

    def to_file(self, array):
        """An array ``(n, *spatial[, ...])`` back in the file's layout."""
        if self.slice_axis is None:
            return array[0]
        return np.moveaxis(array, 0, self.slice_axis)


def _nibabel():
    try:
        import nibabel
    except ImportError as error:
        raise UsageError(
            'reading NIfTI files needs nibabel: pip install "skdgmm[nifti]"'
        ) from error
    return nibabel


def _read_nifti(path):
    nibabel = _nibabel()
    try:
        nifti = nibabel.load(path)
        array = np.asarray(nifti.dataobj)
    except Exception as error:  # nibabel raises many types on bad files
        raise UsageError(f"{path}: cannot read this NIfTI file ({error})") from None
    if array.ndim not in (2, 3, 4):
        raise UsageError(
            f"{path}: a {array.ndim}-D NIfTI image of shape {array.shape}; "
            f"expected a 2-D image, a 3-D volume, or a 4-D volume whose 4th "
            f"axis holds channels"
        )
    return FileImage(path, array, "XYZC"[: array.ndim], nifti.affine)


def _tiff_axes(path, shape, axes):
    """The names of the axes of a TIFF as ``"Z"``, ``"Y"``, ``"X"``, ``"C"``,
    and a note when the file does not name them."""
    import tifffile

    axes = axes.replace("S", "C")  # samples of a pixel (RGB) are channels
    unnamed = sum(axes.count(letter) for letter in "IQ")  # pages, or anything
    if unnamed == 0:
        other = sorted(set(axes) - set("ZYXC"))
        if other or len(set(axes)) != len(axes):
            known = getattr(tifffile.TIFF, "AXES_NAMES", {})  # letter: name
            names = ", ".join(
                f"{letter} ({known.get(letter, 'unknown')})" for letter in other
            )
            raise UsageError(
                f"{path}: a TIFF with axes {axes} and shape {shape}; only Z "
                f"(slices), C or S (channels), Y and X are understood"
                + (f", not {names}: save one file per {other[0]}" if other else "")
            )
        return axes, None
    if unnamed == 1 and len(axes) == 3 and axes[0] in "IQ":
        # a plain multi-page TIFF: pages of 2-D images (a z-stack), or, from
        # a writer that does not name axes, one (H, W, C) image
        if shape[2] < min(shape[:2]):
            return "YXC", (
                f"the file does not name its axes: read as one image of "
                f"{shape[0]}x{shape[1]} pixels with {shape[2]} channels on the "
                f"last (shortest) axis"
            )
        return "ZYX", (
            f"the file does not name its axes: read its {shape[0]} pages as "
            f"the Z slices of a volume (ZYX)"
        )
    if unnamed == 1 and axes[0] in "IQ" and axes[1:] == "YXC":
        return "ZYXC", (
            f"the file does not name its axes: read its {shape[0]} pages as "
            f"the Z slices of a volume with channels (ZYXC)"
        )
    raise UsageError(
        f"{path}: cannot tell the axes of this TIFF (shape {shape}; the file "
        f"names them {axes!r}, I and Q are unknown); save it with ImageJ or OME "
        f"axes, e.g. tifffile.imwrite(path, data, imagej=True, "
        f"metadata={{'axes': 'ZCYX'}})"
    )


def _read_tiff(path):
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            axes, array = series.axes, series.asarray()
    except Exception as error:  # tifffile raises many types on bad files
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"{path}: cannot read this TIFF file ({reason})") from None
    axes, note = _tiff_axes(path, array.shape, axes)
    order = [axes.index(letter) for letter in "ZYXC" if letter in axes]
    return FileImage(
        path, array.transpose(order), "".join(axes[i] for i in order), note=note
    )


def _read_other(path):
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
    if image.ndim == 3:
        if image.shape[-1] in (2, 4):  # grey or RGB with alpha
            image = image[..., :-1]  # an alpha channel is not an intensity
        if (image == image[..., :1]).all():  # grey saved as colour
            image = image[..., 0]
    if image.ndim not in (2, 3):
        raise UsageError(
            f"{path}: expected a 2-D image, with or without channels; got an "
            f"array of shape {image.shape}"
        )
    return FileImage(path, image, "YXC"[: image.ndim])


def read_file(path):
    """The :class:`FileImage` of an image file (PNG, TIFF, JPEG, NIfTI...)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    kind = file_format(path)
    if kind == "nifti":
        return _read_nifti(path)
    if kind == "tiff":
        return _read_tiff(path)
    return _read_other(path)


def _describe(file):
    shape = file.array.shape
    kind = "volume" if file.spatial_dims == 3 else "image"
    return f"a {file.spatial_dims}-D {kind} of shape {shape} (axes {file.axes})"


def arrange(file, spatial_dims):
    """The :class:`Arranged` ``file`` for a model of ``spatial_dims``.

    A volume with ``spatial_dims=2`` is a stack of 2-D slices along its Z
    (its last spatial) axis; a 2-D image with ``spatial_dims=3`` is refused.
    """
    if file.spatial_dims == spatial_dims:
        return Arranged(file, file.array[None])
    if file.spatial_dims == 2:
        raise UsageError(
            f"{file.path}: expected a 3-D image (a volume); got "
            f"{_describe(file)} (use --spatial-dims to choose 2-D images or "
            f"3-D volumes)"
        )
    axis = file.axes.index("Z")
    return Arranged(file, np.moveaxis(file.array, axis, 0), slice_axis=axis)


def choose_spatial_dims(files, spatial_dims):
    """``--spatial-dims``, or what the files are when it is not given."""
    if spatial_dims is not None:
        return spatial_dims
    dims = {file.spatial_dims for file in files}
    if len(dims) == 1:
        return dims.pop()
    image = next(file for file in files if file.spatial_dims == 2)
    volume = next(file for file in files if file.spatial_dims == 3)
    raise UsageError(
        f"the inputs mix 2-D images and volumes ({image.path} is "
        f"{_describe(image)}, {volume.path} is {_describe(volume)}); pass "
        f"--spatial-dims 2 to read the volumes as stacks of 2-D slices"
    )


def read_images(paths, spatial_dims):
    """The :class:`Arranged` images of ``paths`` and the spatial dims chosen."""
    files = [read_file(path) for path in paths]
    spatial_dims = choose_spatial_dims(files, spatial_dims)
    images = [arrange(file, spatial_dims) for file in files]
    for image in images:
        if image.data.shape[1:] != images[0].data.shape[1:]:
            raise UsageError(
                f"all images must have the same shape to train one model on "
                f"them: {paths[0]} is {images[0].data.shape[1:]}, "
                f"{image.file.path} is {image.data.shape[1:]}"
            )
    return images, spatial_dims


def read_masks(paths, images, spatial_dims):
    """One boolean mask ``(n, *spatial)`` per image (nonzero = inside), from
    one file for all images or one file per image."""
    if paths is None:
        return None
    if len(paths) not in (1, len(images)):
        raise UsageError(
            f"give one mask for all images or one per image; got {len(paths)} "
            f"masks for {len(images)} images"
        )
    masks = [arrange(read_file(path), spatial_dims) for path in paths]
    if len(masks) == 1:
        masks = masks * len(images)
    inside = []
    for mask, image in zip(masks, images):
        data = mask.data.any(-1) if mask.channels else mask.data != 0  # e.g. RGB
        if data.shape != image.data.shape[: 1 + spatial_dims]:
            raise UsageError(
                f"{mask.file.path}: the mask has shape {mask.spatial_shape}, "
                f"the images {image.spatial_shape}; they must match"
            )
        inside.append(data)
    return inside


def read_label_maps(paths, images, spatial_dims, n_components):
    """The label maps of the first ``len(paths)`` images, ``(n, *spatial)``
    int arrays with -1 for unlabelled pixels: class k as k, ``OUTSIDE`` (or
    the label maps ``segment`` writes) unlabelled."""
    if paths is None:
        return None
    if len(paths) > len(images):
        raise UsageError(
            f"--labels gives {len(paths)} label maps for {len(images)} images; "
            "give at most one per image, for the first images in order"
        )
    maps = []
    for path, image in zip(paths, images):
        label_map = arrange(read_file(path), spatial_dims)
        data = label_map.data
        if label_map.channels or data.shape != image.data.shape[: 1 + spatial_dims]:
            raise UsageError(
                f"{path}: a label map of shape {label_map.spatial_shape} for an "
                f"image of shape {image.spatial_shape}; they must match, with one "
                "value per pixel"
            )
        if not np.array_equal(data, np.round(data)):  # float files of whole numbers
            raise UsageError(f"{path}: a label map holds whole numbers")
        invalid = np.unique(
            data[(data < 0) | (data >= n_components) & (data != OUTSIDE)]
        )
        if invalid.size:
            raise UsageError(
                f"{path}: label maps hold classes 0 .. {n_components - 1} (K is "
                f"-k) and {OUTSIDE} for unlabelled pixels; found "
                f"{invalid.astype(int).tolist()[:5]}"
            )
        maps.append(np.where(data == OUTSIDE, -1, data.astype(np.int64)))
    return maps


def to_uint8(labels):
    """Labels as stored in a label map: 0..K-1, and OUTSIDE for -1."""
    return np.where(labels < 0, OUTSIDE, labels).astype(np.uint8)


def write_labels(path, labels, affine=None):
    """Write a uint8 label map (2-D or 3-D) in the format of ``path``'s suffix."""
    kind = file_format(Path(path))
    if kind == "nifti":
        nibabel = _nibabel()
        nibabel.save(nibabel.Nifti1Image(labels, affine), path)
    elif kind == "tiff":
        import tifffile

        # ImageJ axes, so that a volume reads back as Z slices
        axes = "ZYX"[-labels.ndim :]
        tifffile.imwrite(path, labels, imagej=True, metadata={"axes": axes})
    else:
        from skimage.io import imsave

        imsave(path, labels, check_contrast=False)


def write_all(writers):
    """Write every ``(path, write)`` pair, ``write(temporary_path)``, then
    move them all into place: an error or Ctrl-C while writing leaves no
    half-written file and replaces no earlier output."""
    staged = []
    try:
        for path, write in writers:
            path = Path(path)
            # the suffix stays last: the writers choose the format by it
            temporary = path.with_name(f".partial-{path.name}")
            staged.append((temporary, path))
            write(temporary)
        for temporary, path in staged:
            os.replace(temporary, path)
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
