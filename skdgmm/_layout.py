"""One place that knows array layouts: user arrays and the geometry of images.

Users pass tabular data ``(n_samples, n_features)`` or stacks of images
``(n_images, *spatial[, n_channels])`` (the channels on the axis that
``channel_axis`` says, the last by default); networks want
``(N, C, *spatial)``. A 2-D array is always tabular data: a single image is
a stack of one, ``X[None]``. Tabular data becomes a single "image" that is a
line of ``n_samples`` pixels, so that every code path below works on one
layout. The geometry of those tensors (the box around a mask, patches,
tiles) is here too.
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils import check_array
from sklearn.utils.validation import _get_feature_names, validate_data

from ._namespace import dispatching


@dataclass(frozen=True)
class Layout:
    """How a user array maps onto ``(N, C, *spatial)``.

    Attributes
    ----------
    spatial_dims : int
        Number of spatial axes; 0 for tabular data.
    channel_axis : bool
        Whether the user array has a trailing channel axis.
    """

    spatial_dims: int
    channel_axis: bool

    @property
    def tabular(self):
        return self.spatial_dims == 0

    @property
    def network_dims(self):
        """Spatial axes of the network's tensors (a line for tabular data)."""
        return self.spatial_dims or 1

    def pixel_shape(self, X_shape):
        """Shape of label maps (and masks) for a user array of this shape."""
        return X_shape[:1] if self.tabular else X_shape[: 1 + self.spatial_dims]

    def n_channels(self, X_shape):
        return X_shape[-1] if self.channel_axis else 1


# The default of the estimators' channel_axis: channels on the last axis
# when the array has one more axis than an image stack without channels,
# with a warning for layouts that look misread.
AUTO = "auto"

# More "channels" than this, or than pixels along an image axis, is
# implausible for a trailing channel axis read by default (see
# _warn_implausible).
_MAX_PLAUSIBLE_CHANNELS = 16

_STACKS = {
    2: ("(n_images, height, width)", "(n_images, height, width, n_channels)"),
    3: (
        "(n_images, depth, height, width)",
        "(n_images, depth, height, width, n_channels)",
    ),
}


def layout_for(ndim, spatial_dims, channel_axis=AUTO):
    """The layout of a user array with ``ndim`` axes, or a ValueError.

    ``channel_axis`` is the estimators' parameter: ``"auto"`` (a channel axis
    when there is room for one), None (no channel axis) or an int (a
    channel axis). A 2-D array is tabular data whatever ``spatial_dims``.
    """
    if ndim == 2:
        if channel_axis is None:
            raise ValueError(
                "channel_axis=None says that X is an image stack without "
                "channels, but a 2-D array is tabular data (n_samples, "
                "n_features). Pass a single image as a stack of one image, "
                "X[None], of shape (1, height, width)."
            )
        return Layout(0, True)
    without, with_channels = _STACKS[spatial_dims]
    if isinstance(channel_axis, str):
        if ndim == 1 + spatial_dims:
            return Layout(spatial_dims, False)
        if ndim == 2 + spatial_dims:
            return Layout(spatial_dims, True)
        raise ValueError(
            f"Expected a 2-D array (n_samples, n_features) or, with "
            f"spatial_dims={spatial_dims}, an image stack {without} or "
            f"{with_channels}; got an array with {ndim} dimensions. A single "
            f"image is a stack of one image, X[None]."
        )
    if channel_axis is None:
        if ndim == 1 + spatial_dims:
            return Layout(spatial_dims, False)
        hint = "For channels, pass channel_axis=-1 (the last axis) or 1" + (
            "; for volumes, spatial_dims=3." if spatial_dims == 2 else "."
        )
        expected = f"and channel_axis=None (no channel axis), an image stack {without}"
    else:
        if ndim == 2 + spatial_dims:
            return Layout(spatial_dims, True)
        hint = "For images without channels, pass channel_axis=None."
        expected = (
            f"and channel_axis={channel_axis} (a channel axis), an image stack "
            f"of {2 + spatial_dims} dimensions such as {with_channels}"
        )
    raise ValueError(
        f"Expected, with spatial_dims={spatial_dims} {expected} (or a 2-D "
        f"array of tabular data); got an array with {ndim} dimensions. {hint}"
    )


def _channel_axis_index(channel_axis, ndim):
    """The axis of an image stack of ``ndim`` axes that holds the channels."""
    if not -ndim <= channel_axis < ndim or channel_axis % ndim == 0:
        raise ValueError(
            f"channel_axis={channel_axis} is not an axis of X (with {ndim} "
            f"dimensions) that can hold channels: axis 0 indexes the images. "
            f"Pass -1 for channels on the last axis, 1 for PyTorch's "
            f"(n_images, n_channels, *spatial), or None for no channel axis."
        )
    return channel_axis % ndim


def _warn_implausible(shape, layout, spatial_dims):
    """Warn when the default reading of an array of ``shape`` looks wrong.

    Only for ``channel_axis="auto"``: passing ``channel_axis`` says how to
    read the array, and silences these warnings.
    """
    doubt = _implausible_reading(shape, layout, spatial_dims)
    if doubt is not None:
        message, channel_axis = doubt
        warnings.warn(
            f"{message}; pass channel_axis={channel_axis} to keep this reading "
            f"without the warning.",
            UserWarning,
            stacklevel=4,
        )


def _implausible_reading(shape, layout, spatial_dims):
    """What looks wrong with the reading, and the axis that keeps it, or None."""
    if layout.tabular:
        n_samples, n_features = shape
        # a (height, width) image: about as many columns as rows
        if n_features > _MAX_PLAUSIBLE_CHANNELS and n_samples < 16 * n_features:
            return (
                f"X of shape {shape} is read as tabular data: {n_samples} "
                f"samples of {n_features} features. If it is one image, pass "
                f"it as a stack of one image, X[None]",
                -1,
            )
        return None
    spatial = shape[1 : 1 + spatial_dims]
    if layout.channel_axis:
        n_channels = shape[-1]
        if n_channels > min(spatial) or n_channels > _MAX_PLAUSIBLE_CHANNELS:
            volumes = (
                "; if X is a stack of volumes without channels, pass spatial_dims=3"
                if spatial_dims == 2
                else ""
            )
            return (
                f"X of shape {shape} is read as {shape[0]} image(s) of "
                f"{spatial} pixels with {n_channels} channels on the last "
                f"axis: more channels than pixels along an image axis, or "
                f"more than {_MAX_PLAUSIBLE_CHANNELS}. If the channels are "
                f"axis 1 (PyTorch's (n_images, n_channels, *spatial)), pass "
                f"channel_axis=1{volumes}",
                -1,
            )
        return None
    last, others = spatial[-1], spatial[:-1]
    # a single (height, width, n_channels) image without X[None]
    if last <= 4 and 4 * last <= min(others):
        return (
            f"X of shape {shape} is read as {shape[0]} images of {spatial} "
            f"pixels without channels. If it is one image with {last} "
            f"channels, pass it as a stack of one image, X[None]",
            None,
        )
    return None


def channels_first(X, layout):
    """View a validated user array as ``(N, C, *spatial)``."""
    if layout.tabular:
        return X.T[np.newaxis]
    if layout.channel_axis:
        return np.moveaxis(X, -1, 1)
    return X[:, np.newaxis]


def mask_channels_first(mask, layout):
    """View a pixel mask as ``(N, *spatial)`` to match :func:`channels_first`."""
    return mask[np.newaxis] if layout.tabular else mask


def channels_last(Y, layout):
    """Inverse of :func:`channels_first` for outputs ``(N, K, *spatial)``.

    Returns an array of shape ``pixel_shape + (K,)``.
    """
    return pixels_last(np.moveaxis(Y, 1, -1), layout)


def pixels_last(Y, layout):
    """Inverse of :func:`channels_first` for per-pixel outputs ``(N,
    *spatial)`` (label maps): an array of ``pixel_shape``."""
    return Y[0] if layout.tabular else Y


# Variances sum squared values: beyond this magnitude they overflow float64.
_MAX_MAGNITUDE = 1e150
# float32 values beyond this have squares that overflow float32 (3.4e38),
# which estimators computing in the input's dtype (GaussianMixture) cannot
# handle; such arrays are converted to float64.
_MAX_FLOAT32_MAGNITUDE = 1e18


def _check_magnitude(X):
    """``X`` (validated, float) if its squares can be summed, else a ValueError.

    float32 arrays with large values come back as float64.
    """
    if X.size == 0:
        return X
    # max and min do not allocate, unlike abs: stacks can be large
    magnitude = max(float(X.max()), -float(X.min()))
    if magnitude > _MAX_MAGNITUDE:
        raise ValueError(
            f"X has values up to {magnitude:.3g} in magnitude; values must be "
            f"below {_MAX_MAGNITUDE:.0e}, or their squares overflow. Rescale X."
        )
    if X.dtype == np.float32 and magnitude > _MAX_FLOAT32_MAGNITUDE:
        return X.astype(np.float64)
    return X


def check_mask(mask, pixel_shape):
    """Validate a user mask and return it as a boolean array (or None).

    Raises
    ------
    TypeError
        If the mask is not boolean (or integer zeros and ones).
    ValueError
        If its shape is not ``pixel_shape``.
    """
    if mask is None:
        return None
    mask = np.asarray(as_array(mask, "mask"))
    if mask.dtype != bool:
        if not (np.issubdtype(mask.dtype, np.integer) and np.isin(mask, (0, 1)).all()):
            raise TypeError(
                f"mask must be a boolean array (True inside the region of "
                f"interest); got dtype {mask.dtype}."
            )
        mask = mask.astype(bool)
    if mask.shape != tuple(pixel_shape):
        raise ValueError(
            f"mask must have shape {tuple(pixel_shape)} (one value per pixel "
            f"of X); got shape {mask.shape}."
        )
    return mask


def _ragged_message(X):
    """What to say of a list of arrays of different shapes."""
    shapes = []
    for x in X:
        try:
            shape = np.shape(x)
        except ValueError:
            shape = "ragged"
        if shape not in shapes:
            shapes.append(shape)
    listed = ", ".join(map(str, shapes[:4])) + (", ..." if len(shapes) > 4 else "")
    return (
        f"All the images (or samples) of X must share one shape; got a "
        f"{type(X).__name__} of {len(X)} arrays of the shapes {listed}. "
        f"Fitting on a collection of images of different sizes is not "
        f"supported: fit them one by one, or resize them to one shape, or "
        f"pad them to one shape and pass a mask that leaves the padding out "
        f"(without it the padding becomes one more cluster)."
    )


def as_array(X, name="X"):
    """``X`` where NumPy (and scikit-learn) can read it.

    A torch tensor (or another array-API array) on the CPU becomes a NumPy
    array, whether or not scikit-learn's ``array_api_dispatch`` is on; a
    torch tensor on another device is copied to the CPU under dispatch
    (what the estimator returns goes back to it), and refused otherwise.
    A list of arrays of different shapes gets
    a ValueError that says that all images must share one shape.
    """
    if isinstance(X, torch.Tensor):
        if X.device.type != "cpu" and dispatching():
            X = X.cpu()
        if X.device.type != "cpu":
            raise TypeError(
                f"{name} is a torch tensor on the device {str(X.device)!r}; "
                f"pass it as a NumPy array ({name}.cpu().numpy()), or turn "
                f"on scikit-learn's array_api_dispatch. The estimator moves "
                f"its own work to its device."
            )
        try:
            return X.detach().resolve_conj().resolve_neg().numpy()
        except TypeError as error:
            raise TypeError(
                f"{name} is a torch tensor of dtype {X.dtype}, which NumPy "
                f"cannot hold; convert it, e.g. {name}.float()."
            ) from error
    if hasattr(X, "__array_namespace__") and not isinstance(X, np.ndarray):
        try:
            return np.asarray(X)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"{name} is an array of {type(X).__module__}.{type(X).__name__} "
                f"that cannot be read as a NumPy array (only arrays in the "
                f"CPU's memory can be): pass it as a NumPy array."
            ) from error
    if isinstance(X, (list, tuple)):
        try:
            return np.asarray(X)
        except ValueError as error:
            if "inhomogeneous" not in str(error):
                raise
            raise ValueError(_ragged_message(X)) from None
    return X


def _finite_inside(X, mask, layout):
    """``X`` with every value outside the ``mask`` finite, or a ValueError
    if one inside is not.

    Pixels outside the mask never enter the model, so they may be NaN or
    infinite; the network still sees some of them as context, so they are
    replaced (in a copy) by the mean of the pixels inside the mask.
    """
    finite = np.isfinite(X)
    if finite.all():
        return X
    pixel_finite = finite.all(-1) if layout.channel_axis else finite
    if not pixel_finite[mask].all():
        inside = X[mask]
        what = "NaN" if np.isnan(inside).any() else "infinity"
        raise ValueError(
            f"Input X contains {what} inside the mask. The pixels inside the "
            f"mask must be finite; outside it, NaN and infinity are allowed."
        )
    inside = X[mask]
    fill = inside.mean(0, dtype=np.float64) if len(inside) else np.float64(0.0)
    return np.where(finite, X, fill.astype(X.dtype))


def check_input(estimator, X, mask, *, reset):
    """Validate ``X`` and ``mask`` for ``estimator`` before any work.

    ``estimator`` has a ``spatial_dims`` parameter and may have a
    ``channel_axis`` one ("auto" when it has none); without ``reset`` X must
    match what it was fitted on. Nothing is written onto the estimator.

    Returns
    -------
    X : ndarray of float
        Channels on the last axis (a view of the input where it can be);
        with a mask, the values outside it that are not finite are
        replaced (see :func:`_finite_inside`).
    mask : ndarray of bool or None
    layout : Layout
    attributes : dict
        With ``reset``, the attributes that describe the input of a fit:
        ``n_features_in_``, ``feature_names_in_`` (None for none),
        ``_layout`` and ``_fitted_with_mask``; otherwise empty.
    """
    channel_axis = getattr(estimator, "channel_axis", AUTO)
    X = as_array(X)
    ndim = X.ndim if hasattr(X, "ndim") else np.asarray(X).ndim
    dtype = getattr(X, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind == "c":
        # scikit-learn's message would print the whole array
        raise ValueError(
            "Complex data not supported: X must hold real numbers (take the "
            "magnitude, or put the real and imaginary parts in two channels)."
        )
    feature_names = None
    # with a mask, only the pixels inside it must be finite
    options = dict(dtype=[np.float64, np.float32], ensure_all_finite=mask is None)
    if sp.issparse(X) or ndim <= 2:
        layout = layout_for(2, estimator.spatial_dims, channel_axis)
        feature_names = _get_feature_names(X)
        if reset:
            X = check_array(X, estimator=estimator, ensure_min_samples=2, **options)
        else:
            X = validate_data(estimator, X, reset=False, **options)
        n_channels = X.shape[1]
    else:
        X = check_array(X, allow_nd=True, **options)
        layout = layout_for(X.ndim, estimator.spatial_dims, channel_axis)
        if layout.channel_axis and not isinstance(channel_axis, str):
            axis = _channel_axis_index(channel_axis, X.ndim)
            if axis != X.ndim - 1:
                X = np.moveaxis(X, axis, -1)
        if 0 in X.shape:
            raise ValueError(f"Found an empty image stack of shape {X.shape}.")
        n_channels = layout.n_channels(X.shape)
        if not reset and n_channels != estimator.n_features_in_:
            raise ValueError(
                f"X has {n_channels} channels, but {type(estimator).__name__} is "
                f"expecting {estimator.n_features_in_} channels as input."
            )
    if isinstance(channel_axis, str) and feature_names is None:
        _warn_implausible(X.shape, layout, estimator.spatial_dims)
    if not reset and layout.spatial_dims != estimator._layout.spatial_dims:
        fitted = (
            "tabular data"
            if estimator._layout.tabular
            else f"{estimator._layout.spatial_dims}-D images"
        )
        raise ValueError(
            f"This estimator was fitted on {fitted}; X must have the same "
            f"layout, got an array of shape {X.shape}."
        )
    mask = check_mask(mask, layout.pixel_shape(X.shape))
    if mask is not None:
        X = _finite_inside(X, mask, layout)
    X = _check_magnitude(X)
    attributes = {}
    if reset:
        attributes = dict(
            n_features_in_=n_channels,
            feature_names_in_=feature_names,
            _layout=layout,
            _fitted_with_mask=mask is not None,
        )
    return X, mask, layout, attributes


def set_input_attributes(estimator, attributes):
    """Write the ``attributes`` of :func:`check_input` onto ``estimator``
    (a ``feature_names_in_`` of None removes the attribute)."""
    for name, value in attributes.items():
        if value is None:
            vars(estimator).pop(name, None)
        else:
            setattr(estimator, name, value)


def validate_input(estimator, X, mask, *, reset):
    """:func:`check_input`, writing the input attributes when ``reset``.

    Returns
    -------
    X : ndarray of float
    mask : ndarray of bool or None
    layout : Layout
    """
    X, mask, layout, attributes = check_input(estimator, X, mask, reset=reset)
    set_input_attributes(estimator, attributes)
    return X, mask, layout


def masked_pixels(X, mask, layout):
    """The pixels of a validated array inside the mask, as ``(P, C)``."""
    pixels = np.moveaxis(channels_first(X, layout), 1, -1)
    if mask is None:
        return pixels.reshape(-1, pixels.shape[-1])
    return pixels[mask_channels_first(mask, layout)]


def count_pixels(X_shape, mask, layout):
    """Number of pixels inside the mask (all pixels without one)."""
    if mask is not None:
        return int(np.count_nonzero(mask))
    return math.prod(layout.pixel_shape(X_shape))


def sample_pixels(X, mask, layout, n_samples, random_state, *, return_images=False):
    """At most ``n_samples`` pixels inside the mask, as ``(P, C)``.

    All of them when there are fewer, in the order of :func:`masked_pixels`;
    otherwise a random subset, read pixel by pixel so that a memory-mapped
    stack is never loaded whole. With ``return_images``, also the image of
    each pixel (images only).
    """
    shape = layout.pixel_shape(X.shape)
    total = count_pixels(X.shape, mask, layout)
    if total <= n_samples:
        pixels = masked_pixels(X, mask, layout)
        if mask is None:
            images = np.repeat(np.arange(shape[0]), math.prod(shape[1:]))
        else:
            images = np.nonzero(mask)[0]
    else:
        chosen = np.sort(random_state.choice(total, n_samples, replace=False))
        if mask is not None:
            chosen = np.flatnonzero(mask)[chosen]
        index = np.unravel_index(chosen, shape)
        pixels, images = np.asarray(X[index]).reshape(n_samples, -1), index[0]
    return (pixels, images) if return_images else pixels


def per_image(values, layout):
    """Per-image, per-channel ``values`` ``(N, C)`` shaped to broadcast
    against a user stack of this layout."""
    shape = (len(values),) + (1,) * layout.spatial_dims
    return values.reshape(shape + values.shape[1:] if layout.channel_axis else shape)


def unmask_pixels(values, X_shape, mask, layout, fill):
    """Inverse of :func:`masked_pixels` for per-pixel outputs ``(P, ...)``.

    Returns an array of shape ``pixel_shape + values.shape[1:]`` with
    ``fill`` outside the mask.
    """
    shape = layout.pixel_shape(X_shape) + values.shape[1:]
    if mask is None:
        return values.reshape(shape)
    out = np.full(shape, fill, dtype=np.result_type(values.dtype, type(fill)))
    out[mask] = values
    return out


# The most pixels a network sees at once at inference; larger inputs go
# through it in tiles (about 150 MB of activations of a U-Net at width 8).
TILE_PIXELS = 2**19

# The most pixels of a batch of small images labelled in one forward pass:
# one 256 x 256 image. Larger batches run slower per image on the CPU (8 such
# images: 25 against 17 ms each), their activations far beyond the cache.
FORWARD_PIXELS = 2**16


def patch_edge(n_pixels, spatial_dims):
    """Side of the largest square (cube) of at most ``n_pixels`` pixels."""
    edge = int(round(n_pixels ** (1 / spatial_dims)))
    return edge if edge**spatial_dims <= n_pixels else edge - 1


def tile_windows(size, edge, overlap):
    """The fewest windows of at most ``edge`` pixels covering ``size`` with
    an overlap of at least ``overlap``, all of one length, evenly spread."""
    if size <= edge:
        return [slice(0, size)]
    n = math.ceil((size - overlap) / (edge - overlap))
    length = math.ceil((size + (n - 1) * overlap) / n)
    starts = np.linspace(0, size - length, n).round().astype(int)
    return [slice(start, start + length) for start in starts.tolist()]


def mask_box(mask, margin):
    """Slices of the box around the masked pixels of ``mask`` (N, *S), widened
    by ``margin`` pixels on every side (within the image); the whole image
    when nothing is masked."""
    inside = mask.any(0)
    if not inside.any():
        return tuple(slice(None) for _ in inside.shape)
    region = []
    for axis, size in enumerate(inside.shape):
        other = tuple(a for a in range(inside.ndim) if a != axis)
        where = np.flatnonzero(inside.any(other))
        region.append(
            slice(max(where[0] - margin, 0), min(where[-1] + 1 + margin, size))
        )
    return tuple(region)


def mask_windows(mask, margin):
    """Windows of one shape around each image's masked pixels of ``mask``
    (N, *S): each image's :func:`mask_box` widened on every axis to the
    largest box's extent (within the image), so that the windows stack into
    one batch. A batch of images with boxes of one size costs no more than
    its largest image, whatever their positions."""
    boxes = [
        [box.indices(size)[:2] for box, size in zip(mask_box(m[None], margin), m.shape)]
        for m in mask
    ]
    extents = np.max([[stop - start for start, stop in box] for box in boxes], axis=0)
    windows = []
    for box in boxes:
        window = []
        for (start, stop), extent, size in zip(box, extents, mask.shape[1:]):
            start = min(max(start - (extent - (stop - start)) // 2, 0), size - extent)
            window.append(slice(start, start + extent))
        windows.append(tuple(window))
    return windows


def random_window(shape, edge, generator):
    """Slices of a random window of at most ``edge`` pixels per axis."""
    window = []
    for size in shape:
        extent = min(size, edge)
        start = int(torch.randint(size - extent + 1, (1,), generator=generator))
        window.append(slice(start, start + extent))
    return tuple(window)
