"""Training data as tensors: units (:class:`Scaling`) and mini-batches.

The input's units are the user's; the network sees every channel
standardised, and the likelihood is computed in the units of
:class:`Scaling` (one centre per channel, one scale for all). Every
conversion between them is a method of :class:`Scaling`.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._layout import (
    TILE_PIXELS,
    channels_first,
    mask_box,
    mask_channels_first,
    patch_edge,
    random_window,
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


@dataclass
class Batch:
    """Tensors of a mini-batch of images, channels first.

    ``x_net`` is the network input, ``x_lik`` the pixels in the units where the
    likelihood is computed, ``mask`` (float, 0 or 1) the pixels that count.
    ``index`` and ``region`` locate the batch in the stack: images, then the
    spatial crop. ``is_patch`` says that the batch is a random window of its
    images (see :meth:`ImageBatches.shuffled`), whose ``region`` is unknown.
    """

    x_net: torch.Tensor
    x_lik: torch.Tensor
    mask: torch.Tensor
    index: object
    region: tuple
    is_patch: bool = False

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
    With a mask, each batch is cropped to the box around its masked pixels
    plus a margin of context: pixels far from the mask cost time and change
    nothing. Inference then goes image by image, so that an image's crop,
    and hence its labels, do not depend on the other images.
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
    ):
        self.X, self.mask = X, mask
        self.batch_size, self.device, self.dtype = batch_size, device, dtype
        self.patch_pixels = patch_pixels
        self.margin = margin
        # whether training has cut patches (see _patch)
        self.patched = False
        shape = (1, -1) + (1,) * (X.ndim - 2)
        # centred before the conversion to the batches' dtype: float32 would
        # round away the differences between large values
        self._center = np.reshape(scaling.center, shape)
        self._net_scale = self.tensor(scaling.channel_scale).reshape(shape)
        self._lik_scale = scaling.scale
        self._whole = self._make(slice(None)) if len(X) <= batch_size else None

    def tensor(self, array):
        """``array`` as a tensor of the batches' dtype, on their device."""
        return torch.tensor(
            np.ascontiguousarray(array), dtype=self.dtype, device=self.device
        )

    def _make(self, index):
        X = self.X[index]
        if self.mask is None:
            region = ()
            x = self.tensor(X - self._center)
            mask = torch.ones_like(x[:, 0])
        else:
            mask = self.mask[index]
            region = mask_box(mask, self.margin)
            x = self.tensor(X[(slice(None), slice(None), *region)] - self._center)
            mask = self.tensor(mask[(slice(None), *region)])
        return Batch(x / self._net_scale, x / self._lik_scale, mask, index, region)

    def __len__(self):
        return len(self.X)

    def ordered(self):
        """All batches in order, for inference.

        Images with a mask go one by one (their crop must not depend on the
        others); otherwise a batch holds at most ``TILE_PIXELS`` pixels, or
        one image, so that inference memory stays bounded.
        """
        if self.mask is None:
            per_image = max(1, TILE_PIXELS // math.prod(self.X.shape[2:]))
            step = min(self.batch_size, per_image)
        else:
            step = 1
        if self._whole is not None and step >= len(self.X):
            yield self._whole
            return
        for start in range(0, len(self.X), step):
            yield self._make(slice(start, min(start + step, len(self.X))))

    def shuffled(self, generator):
        """All batches in an order drawn from ``generator`` (for training)."""
        if self._whole is not None:
            yield self._patch(self._whole, generator)
            return
        order = torch.randperm(len(self.X), generator=generator).numpy()
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
        )


def image_batches(X, mask, layout, scaling, *, batch_size, device, patch_pixels):
    """:class:`ImageBatches` of a validated user array and mask."""
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
    )


def network_responsibilities(network, batches, n_components):
    """The softmax of the ``network``'s logits for every image of
    ``batches``: an array ``(N, K, *spatial)`` in the batches' dtype (float32
    for images: the largest array of inference), zero outside the crops."""
    resp = np.zeros(
        (len(batches), n_components) + batches.X.shape[2:],
        dtype=torch.empty(0, dtype=batches.dtype).numpy().dtype,
    )
    with torch.no_grad():
        for batch in batches.ordered():
            resp[(batch.index, slice(None), *batch.region)] = (
                network(batch.x_net).softmax(1).cpu().numpy()
            )
    return resp
