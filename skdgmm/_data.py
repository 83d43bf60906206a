"""Training data as tensors: units (:class:`Scaling`) and mini-batches.

The input's units are the user's; the network sees every channel
standardised, and the likelihood is computed in the units of
:class:`Scaling` (one centre per channel, one scale for all). Every
conversion between them is a method of :class:`Scaling`.
"""

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ._gaussian import mixture_log_likelihood
from ._layout import (
    FORWARD_PIXELS,
    TILE_PIXELS,
    channels_first,
    mask_channels_first,
    mask_windows,
    patch_edge,
    per_image,
    random_window,
    sample_pixels,
)


@dataclass
class Scaling:
    """Affine maps from input units to the network's and the likelihood's.

    The likelihood uses one scale for all channels so that every covariance
    type (spherical included) maps back to input units exactly. It counts
    ``reg_covar`` with the spread of the pixels, so that the regularization
    stays of order one in the likelihood's units (in float32 too) however
    small the values are.
    """

    center: np.ndarray
    scale: float
    channel_scale: np.ndarray

    @classmethod
    def from_pixels(cls, pixels, reg_covar=0.0):
        center = pixels.mean(0)
        # a spread below float32's smallest normal number would divide the
        # network's input by zero: such a channel is constant
        spread = pixels.std(0)
        spread[spread < np.finfo(np.float32).tiny] = 0.0
        channel_scale = np.where(spread > 0, spread, 1.0)
        scale = float(np.sqrt(np.mean(spread**2) + reg_covar)) or 1.0
        return cls(center, scale, channel_scale)

    # -- input units -> likelihood units --------------------------------------

    def pixels(self, values):
        """Pixels or means ``(..., F)``."""
        return (np.asarray(values) - self.center) / self.scale

    def variance(self, value):
        """A variance such as ``reg_covar``."""
        return value / self.scale**2

    def precisions(self, precisions):
        return np.asarray(precisions) * self.scale**2

    # -- likelihood units -> input units --------------------------------------

    def gaussians_to_input(self, means, covariances, precisions_chol, precisions):
        """The fitted Gaussians in the units of the input."""
        return (
            means * self.scale + self.center,
            covariances * self.scale**2,
            precisions_chol / self.scale,
            precisions / self.scale**2,
        )

    def log_density_to_input(self, log_density):
        """Log-densities of ``len(center)``-dimensional pixels."""
        return log_density - len(self.center) * np.log(self.scale)


# Percentiles that delimit an image's intensities for rescale_intensity:
# robust to a few outlying pixels.
INTENSITY_PERCENTILES = (0.5, 99.5)


def intensity_ranges(X, mask):
    """Per-image, per-channel ``INTENSITY_PERCENTILES`` of the pixels inside
    the mask, of a channels-first stack ``(N, C, *S)``: shape ``(N, 2, C)``,
    NaN for an image without pixels in the mask. One image at a time, so
    that a memory-mapped stack is never loaded whole."""
    ranges = np.full((len(X), 2, X.shape[1]), np.nan)
    for i in range(len(X)):
        pixels = np.asarray(X[i]).reshape(X.shape[1], -1)
        if mask is not None:
            pixels = pixels[:, np.asarray(mask[i]).ravel()]
        if pixels.shape[1]:
            ranges[i] = np.percentile(pixels, INTENSITY_PERCENTILES, axis=1)
    return ranges


@dataclass
class IntensityRescaling:
    """Maps that give every image the intensity range of the collection.

    ``low`` and ``high`` (per channel) are the median over the training
    images of their ``INTENSITY_PERCENTILES`` inside the mask: the range of
    a typical image. Each image ``i`` is mapped by ``x -> slope_i * x +
    offset_i`` so that its own percentiles land on them: images of one study
    that differ in brightness and contrast (coil sensitivity, windowing,
    staining) then share one set of Gaussians, in the units of a typical
    image; a new image is mapped by its own percentiles.
    """

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of_collection(cls, ranges):
        """The rescaling of a collection of :func:`intensity_ranges`."""
        if np.isnan(ranges).all():
            channels = ranges.shape[-1]
            return cls(np.zeros(channels), np.ones(channels))
        low, high = np.nanmedian(ranges, axis=0)
        return cls(low, high)

    def maps(self, ranges):
        """Slopes and offsets ``(N, C)`` of images of :func:`intensity_ranges`
        (an image without pixels, or flat, is only shifted)."""
        low, high = ranges[:, 0], ranges[:, 1]
        width, reference = high - low, self.high - self.low
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where((width > 0) & (reference > 0), reference / width, 1.0)
        offset = np.nan_to_num(self.low - slope * low)
        return slope, offset


def image_ranges(X, mask, layout):
    """:func:`intensity_ranges` of a validated user stack and mask."""
    return intensity_ranges(
        channels_first(X, layout),
        None if mask is None else mask_channels_first(mask, layout),
    )


# rescale_intensity="auto" rescales a stack whose images' intensity ranges
# (INTENSITY_PERCENTILES inside the mask) spread by more than this: the
# interquartile range over the images of the log of their widths, or of their
# centres in typical widths, in some channel. Slices of one volume spread by
# less (the MNI152 slices: 0.20 and 0.05; rescaled, their collection lost
# 0.024 Dice), slices of different patients or scanners by more (EMIDEC: 0.38
# and 0.42, rescaled +0.085; DSB's microscopy images: 0.76 and 0.62).
RANGE_SPREAD = 0.3


def ranges_differ(ranges):
    """Whether the images of :func:`intensity_ranges` ``(N, 2, C)`` differ
    in brightness or contrast by more than ``RANGE_SPREAD``."""
    low, high = ranges[:, 0], ranges[:, 1]
    width, centre = high - low, (low + high) / 2
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        # a channel flat in every image (or without pixels) has no spread
        warnings.simplefilter("ignore", RuntimeWarning)
        log_width = np.log(width)
        typical = np.nanmedian(width, axis=0)
        centres = np.where(typical > 0, centre / typical, np.nan)
        spreads = [
            np.nanpercentile(values, 75, axis=0) - np.nanpercentile(values, 25, axis=0)
            for values in (np.where(width > 0, log_width, np.nan), centres)
        ]
    return bool(np.any(np.nan_to_num(spreads) > RANGE_SPREAD))


def collection_rescaling(X, mask, layout, mode):
    """The :class:`IntensityRescaling` of a training stack and the slopes and
    offsets of its images (each image's percentiles computed once), or
    ``(None, None)``: for tabular data, unless ``mode`` is True, or "auto"
    and the images' ranges differ (see :func:`ranges_differ`)."""
    if not mode or layout.tabular:
        return None, None
    ranges = image_ranges(X, mask, layout)
    if mode == "auto" and not ranges_differ(ranges):
        return None, None
    rescaling = IntensityRescaling.of_collection(ranges)
    return rescaling, rescaling.maps(ranges)


def intensity_maps(rescaling, X, mask, layout):
    """Per-image slopes and offsets of ``rescaling`` for a stack, or None."""
    if rescaling is None:
        return None
    return rescaling.maps(image_ranges(X, mask, layout))


def training_sample(X, mask, layout, n_samples, random_state, rescaling=None):
    """At most ``n_samples`` pixels inside the mask (see
    :func:`~skdgmm._layout.sample_pixels`), each mapped as its image by
    ``rescaling`` (slopes and offsets of :meth:`IntensityRescaling.maps`)
    if given."""
    pixels, images = sample_pixels(
        X, mask, layout, n_samples, random_state, return_images=True
    )
    return map_pixels(pixels, images, rescaling)


def map_pixels(pixels, images, rescaling):
    """``pixels`` ``(P, C)`` of the ``images`` ``(P,)`` mapped as their
    images by ``rescaling`` (slopes and offsets of
    :meth:`IntensityRescaling.maps`), if given."""
    if rescaling is None:
        return pixels
    slope, offset = rescaling
    return pixels * slope[images] + offset[images]


# Training sorts the shuffled images by crop size within groups of this many
# batches: masked MyoPS slices (192 x 192, batches of 8) then train on 1.3x
# fewer pixels (EMIDEC 1.2x) than batches of randomly mixed sizes, 1.4x with
# every image sorted, where batches no longer mix from epoch to epoch.
SORTED_BATCHES = 4


@dataclass
class Batch:
    """Tensors of a mini-batch of images, channels first.

    ``x_net`` is the network input, ``x_lik`` the pixels in the units where the
    likelihood is computed, ``mask`` (float, 0 or 1) the pixels that count.
    ``index`` and ``region`` locate the batch in the stack: images, then the
    spatial crop; ``region`` is None where the images of a batch are cropped
    to windows of their own (see :func:`~skdgmm._layout.mask_windows`).
    ``is_patch`` says that the batch is a random window of its images (see
    :meth:`ImageBatches.shuffled`).
    """

    x_net: torch.Tensor
    x_lik: torch.Tensor
    mask: torch.Tensor
    index: object
    region: tuple
    is_patch: bool = False
    # the class of each labelled pixel (B, *spatial), -1 elsewhere, or None
    labels: torch.Tensor = None

    def __len__(self):
        return len(self.x_net)

    def pixels(self, tensor):
        """``(B, C, *spatial)`` -> ``(B, P, C)``."""
        return tensor.flatten(2).mT

    def masked_mean(self, per_pixel):
        """Mean over each image's masked pixels of values (B, P)."""
        mask = self.mask.flatten(1)
        return (per_pixel * mask).sum(-1) / mask.sum(-1).clamp_min(1)

    def image_mean(self, values):
        """Mean over the images of per-image values (B, ...), leaving out
        images without pixels in the mask."""
        counted = (self.mask.flatten(1).sum(-1) > 0).to(values.dtype)
        counted = counted.reshape(counted.shape + (1,) * (values.ndim - 1))
        return (values * counted).sum(0) / counted.sum(0).clamp_min(1)


class ImageBatches:
    """Mini-batches of a channels-first stack, converted to tensors lazily.

    The stack may be a memory-mapped array: only one batch at a time is read.
    A stack that fits in one batch is converted once and kept on the device.
    With a mask, each image is cropped to the box around its masked pixels
    plus a margin of context, widened to the largest box of its batch:
    pixels far from the mask cost time and change nothing. Inference then
    goes image by image, so that an image's crop, and hence its labels, do
    not depend on the other images.
    """

    def __init__(
        self,
        X,
        mask,
        scaling,
        *,
        batch_size,
        device,
        dtype,
        patch_pixels=None,
        margin=8,
        rescaling=None,
        labels=None,
    ):
        self.X, self.mask, self.labels = X, mask, labels
        self.batch_size, self.device, self.dtype = batch_size, device, dtype
        self.patch_pixels = patch_pixels
        self.margin = margin
        # whether training has cut patches (see _patch)
        self.patched = False
        shape = (1, -1) + (1,) * (X.ndim - 2)
        # per-image (slope, offset), shaped (N, C, 1, ...), or None
        self._rescaling = None
        if rescaling is not None:
            self._rescaling = tuple(
                np.reshape(a, (len(X), -1) + shape[2:]) for a in rescaling
            )
        # centred before the conversion to the batches' dtype: float32 would
        # round away the differences between large values
        self._center = np.reshape(scaling.center, shape)
        self._net_scale = self.tensor(scaling.channel_scale).reshape(shape)
        self._lik_scale = scaling.scale

    @functools.cached_property
    def _whole(self):
        """The stack as one batch, converted once when first used, if it fits
        in one (masked inference, image by image, never uses it)."""
        return self._make(slice(None)) if len(self.X) <= self.batch_size else None

    def tensor(self, array):
        """``array`` as a tensor of the batches' dtype, on their device."""
        return torch.tensor(
            np.ascontiguousarray(array), dtype=self.dtype, device=self.device
        )

    def _make(self, index):
        X = self.X[index]
        if self._rescaling is not None:
            slope, offset = self._rescaling
            X = X * slope[index] + offset[index]
        labels = None if self.labels is None else self.labels[index]
        if self.mask is None:
            region = ()
            x = self.tensor(X - self._center)
            mask = torch.ones_like(x[:, 0])
        else:
            mask = self.mask[index]
            windows = mask_windows(mask, self.margin)
            region = windows[0] if all(w == windows[0] for w in windows) else None

            def crop(images, channel=()):
                return np.stack([a[(*channel, *w)] for a, w in zip(images, windows)])

            x = self.tensor(crop(X, (slice(None),)) - self._center)
            mask = self.tensor(crop(mask))
            labels = None if labels is None else crop(labels)
        if labels is not None:
            labels = torch.as_tensor(
                np.ascontiguousarray(labels), dtype=torch.long, device=self.device
            )
        return Batch(
            x / self._net_scale, x / self._lik_scale, mask, index, region, labels=labels
        )

    def __len__(self):
        return len(self.X)

    def ordered(self, max_pixels=TILE_PIXELS):
        """All batches in order, for inference.

        Images with a mask go one by one (their crop must not depend on the
        others); otherwise a batch holds at most ``max_pixels`` pixels, or
        one image, so that inference memory stays bounded.
        """
        if self.mask is None:
            per_image = max(1, max_pixels // math.prod(self.X.shape[2:]))
            step = min(self.batch_size, per_image)
        else:
            step = 1
        if step >= len(self.X) and self._whole is not None:
            yield self._whole
            return
        for start in range(0, len(self.X), step):
            yield self._make(slice(start, min(start + step, len(self.X))))

    @functools.cached_property
    def _box_sizes(self):
        """Pixels in each image's crop (see :func:`mask_windows`)."""
        return np.array(
            [
                math.prod(
                    w.stop - w.start for w in mask_windows(m[None], self.margin)[0]
                )
                for m in self.mask
            ]
        )

    def shuffled(self, generator):
        """All batches in an order drawn from ``generator`` (for training)."""
        if self._whole is not None:
            yield self._patch(self._whole, generator)
            return
        order = torch.randperm(len(self.X), generator=generator).numpy()
        if self.mask is not None:
            # images of similar box sizes together: a batch costs as much as
            # its largest box (see mask_windows); sorted within groups of
            # a few batches only, so that batches still mix
            group = SORTED_BATCHES * self.batch_size
            for start in range(0, len(order), group):
                part = order[start : start + group]
                part[:] = part[np.argsort(self._box_sizes[part], kind="stable")]
        for start in range(0, len(order), self.batch_size):
            batch = self._make(np.sort(order[start : start + self.batch_size]))
            yield self._patch(batch, generator)

    def _patch(self, batch, generator):
        """A random window of ``batch`` of at most ``patch_pixels`` pixels.

        Large images are trained on such patches, one per image and
        iteration, so that an iteration costs the same whatever the image
        size; with fixed Gaussians the loss of a patch is an unbiased
        estimate of the whole image's.
        """
        shape = batch.mask.shape[1:]
        if self.patch_pixels is None or math.prod(shape) <= self.patch_pixels:
            return batch
        self.patched = True
        window = random_window(
            shape, patch_edge(self.patch_pixels, len(shape)), generator
        )
        pixels = (slice(None), slice(None), *window)
        return Batch(
            batch.x_net[pixels],
            batch.x_lik[pixels],
            batch.mask[pixels[1:]],
            batch.index,
            region=None,
            is_patch=True,
            labels=None if batch.labels is None else batch.labels[pixels[1:]],
        )


def image_batches(
    X,
    mask,
    layout,
    scaling,
    *,
    batch_size,
    device,
    patch_pixels,
    rescaling=None,
    labels=None,
):
    """:class:`ImageBatches` of a validated user array and mask, each image
    mapped by ``rescaling`` (slopes and offsets of
    :meth:`IntensityRescaling.maps`) if given."""
    # tabular problems are small and exactly GaussianMixture's: float64,
    # where the device has it
    double = layout.tabular and device.type != "mps"
    return ImageBatches(
        channels_first(X, layout),
        None if mask is None else mask_channels_first(mask, layout),
        scaling,
        batch_size=batch_size,
        device=device,
        dtype=torch.float64 if double else torch.float32,
        patch_pixels=patch_pixels,
        rescaling=rescaling,
        labels=None if labels is None else mask_channels_first(labels, layout),
    )


def network_responsibilities(network, batches, n_components, adapt=None):
    """The softmax of the ``network``'s logits for every image of
    ``batches``: an array ``(N, K, *spatial)`` in the batches' dtype (float32
    for images: the largest array of inference), zero outside the crops.
    ``adapt(resp, batch)``, if given, maps each batch's responsibilities
    (see :mod:`skdgmm._adaptation`)."""
    resp = np.zeros(
        (len(batches), n_components) + batches.X.shape[2:],
        dtype=torch.empty(0, dtype=batches.dtype).numpy().dtype,
    )
    with torch.no_grad():
        for batch in batches.ordered(FORWARD_PIXELS):
            batch_resp = network(batch.x_net).softmax(1)
            if adapt is not None:
                batch_resp = adapt(batch_resp, batch)
            resp[(batch.index, slice(None), *batch.region)] = batch_resp.cpu().numpy()
    return resp


def batch_labels(network, batches):
    """Each inference batch of ``batches`` with the ``network``'s labels of
    its pixels ``(B, *spatial)``, as a tensor; call it under
    ``torch.no_grad()``. The labels are the first maximum of the logits,
    which the softmax keeps in order, by ``max(1).indices``: torch's CPU
    ``argmax`` over the few components of a channels-first tensor is ten
    times slower (39 against 3 ms for 8 images of 256 x 256 pixels and 3
    components)."""
    for batch in batches.ordered(FORWARD_PIXELS):
        yield batch, network(batch.x_net).max(1).indices


def network_labels(network, batches):
    """The most responsible component of every pixel of ``batches``: an
    int array ``(N, *spatial)``, -1 outside the crops. Labels alone need
    neither the softmax nor an array of responsibilities."""
    labels = np.full((len(batches),) + batches.X.shape[2:], -1, dtype=np.intp)
    with torch.no_grad():
        for batch, predicted in batch_labels(network, batches):
            labels[(batch.index, *batch.region)] = predicted.cpu().numpy()
    return labels


def pixel_log_likelihood(X, layout, log_weights, gaussians, rescaling=None):
    """Log-likelihood of every pixel of a validated user array under a
    Gaussian mixture, in the input's units: an array of the pixel shape.

    ``log_weights`` are ``(K,)``, or per pixel ``pixel_shape + (K,)``;
    ``gaussians`` are ``(means, precisions_cholesky, covariance_type)`` as
    numpy arrays. With ``rescaling`` (slopes and offsets of
    :meth:`IntensityRescaling.maps`) the pixels are mapped as their images
    and the change of variables is counted. Computed a few images (or
    ``TILE_PIXELS`` samples) at a time, so that memory stays bounded.
    """
    means, precisions_chol, covariance_type = gaussians
    means, precisions_chol = (
        np.asarray(a, np.float64) for a in (means, precisions_chol)
    )
    shape = layout.pixel_shape(X.shape)
    step = max(1, TILE_PIXELS // math.prod(shape[1:]))
    scores = np.empty(shape)
    for start in range(0, shape[0], step):
        part = slice(start, start + step)
        x, log_jacobian = X[part], 0.0
        if rescaling is not None:
            slope, offset = (per_image(a[part], layout) for a in rescaling)
            x = x * slope + offset
            log_jacobian = np.log(slope)
            if layout.channel_axis:
                log_jacobian = log_jacobian.sum(-1)
        # a writable copy of read-only input: torch warns on sharing it
        pixels = torch.as_tensor(np.require(x, np.float64, ["C", "W"]))
        weights = log_weights if np.ndim(log_weights) == 1 else log_weights[part]
        scores[part] = (
            mixture_log_likelihood(
                pixels.reshape(1, -1, means.shape[1]),
                torch.as_tensor(weights).reshape(-1, len(means)),
                torch.as_tensor(means)[None],
                torch.as_tensor(precisions_chol)[None],
                covariance_type,
            )[0]
            .numpy()
            .reshape(scores[part].shape)
            + log_jacobian
        )
    return scores
