"""The optimisation of a network on the mixture likelihood.

Losses are functions of ``(logits, batch)``; :func:`optimize` runs AdamW over
shuffled mini-batches until the epoch loss changes by less than ``tol``.
"""

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ._gaussian import (
    component_variances,
    compute_precision_cholesky,
    estimate_gaussian_parameters,
    estimate_log_gaussian_prob,
)
from ._networks import TILE_PIXELS, patch_edge


@dataclass
class Batch:
    """Tensors of a mini-batch of images, channels first.

    ``x_net`` is the network input, ``x_lik`` the pixels in the units where the
    likelihood is computed, ``mask`` (float, 0 or 1) the pixels that count.
    ``index`` and ``region`` locate the batch in the stack: images, then the
    spatial crop.
    """

    x_net: torch.Tensor
    x_lik: torch.Tensor
    mask: torch.Tensor
    index: object
    region: tuple

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

    def _region(self, mask):
        """Slices of the box around the masked pixels of ``mask`` (N, *S)."""
        inside = mask.any(0)
        if not inside.any():
            return tuple(slice(None) for _ in inside.shape)
        region = []
        for axis, size in enumerate(inside.shape):
            other = tuple(a for a in range(inside.ndim) if a != axis)
            where = np.flatnonzero(inside.any(other))
            region.append(
                slice(
                    max(where[0] - self.margin, 0),
                    min(where[-1] + 1 + self.margin, size),
                )
            )
        return tuple(region)

    def _make(self, index):
        X = self.X[index]
        if self.mask is None:
            region = ()
            x = self.tensor(X - self._center)
            mask = torch.ones_like(x[:, 0])
        else:
            mask = self.mask[index]
            region = self._region(mask)
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
        edge = patch_edge(self.patch_pixels, len(shape))
        window = []
        for size in shape:
            extent = min(size, edge)
            start = int(torch.randint(size - extent + 1, (1,), generator=generator))
            window.append(slice(start, start + extent))
        pixels = (slice(None), slice(None), *window)
        return Batch(
            batch.x_net[pixels],
            batch.x_lik[pixels],
            batch.mask[pixels[1:]],
            batch.index,
            region=None,
        )


def loss_gaussians(X, resp, *, reg_covar, covariance_type, gaussians, initial):
    """The Gaussians ``(weights, means, covariances)`` of the loss.

    ``resp`` are the network's responsibilities of the pixels ``X`` (zero
    outside the mask), both with a leading batch axis, and ``initial`` the
    initial EM fit ``(weights, means, covariances)`` with a leading axis of
    length 1. As ``gaussians`` says:

    * ``"free"``: the closed-form M-step of ``resp`` on each image,
      differentiable in the network (the paper's model);
    * ``"bounded"``: the same means and covariances, each covariance no wider
      than its initial one (see :func:`bound_covariances`), and the initial
      mixing weights;
    * ``"fixed"``: the initial Gaussians.
    """
    if gaussians == "fixed":
        return initial
    nk, means, covariances = estimate_gaussian_parameters(
        X, resp, reg_covar, covariance_type
    )
    if gaussians == "free":
        return nk / nk.sum(-1, keepdim=True), means, covariances
    return initial[0], means, bound_covariances(covariances, initial, covariance_type)


# Floor of the log-posterior in the free energy (nats); see mixture_energy.
LOG_POSTERIOR_FLOOR = -30.0
# A component whose initial variance per feature is below this share of the
# data's (the likelihood's units make the data's variance about 1 per
# feature) is a flat region; see bound_covariances.
FLAT_VARIANCE = 1e-2
# Training that ends this much (nats per pixel) below where it started, and
# below the initial EM fit, goes back to an earlier state; see optimize.
GUARD_NATS = 0.5


def mixture_energy(
    logits,
    batch,
    *,
    covariance_type,
    reg_covar,
    spatially_variant,
    gaussians="free",
    initial=None,
):
    """Per-image energy and log-likelihood of the masked pixels.

    The Gaussians are those of :func:`loss_gaussians`. The energy is, per
    pixel,

    * deepG: the variational free energy ``sum_k w_k (log w_k - log pi_k
      N_k(x))`` (the negative evidence lower bound of EM), equal to
      ``KL(w || p) - log L(x)`` with ``p`` the posterior of the components
      and ``L`` the mixture's likelihood; its minimum over ``w``, reached at
      the posterior, is the negative log-likelihood;
    * deepSVG: the negative log-likelihood ``-log sum_k w_k N_k(x)`` of the
      spatially variant mixture, whose weights are ``w`` itself.

    In the divergence the posterior of a flat component (see
    :func:`flat_components`) is floored at ``exp(LOG_POSTERIOR_FLOOR)``: a
    responsibility on it at a pixel it cannot explain costs at most 30 nats
    per unit. Without the floor it costs the squared distance in that
    component's standard deviations, which for a flat region (zero padding:
    a variance near ``reg_covar``) is of order ``1e5`` nats; the network's
    soft responsibilities at the start of training then make the energy of
    such a component so large that the quickest descent empties it, flat
    pixels included. Other components keep the exact divergence (flooring
    it everywhere cost MNI152 0.04 Dice).

    Returns
    -------
    energy, log_likelihood : torch.Tensor of shape (B,)
    means : torch.Tensor of shape (B, K, F)
    """
    log_w = batch.pixels(logits.log_softmax(1))  # (B, P, K)
    w = log_w.exp()
    X = batch.pixels(batch.x_lik)
    weights, means, covariances = loss_gaussians(
        X,
        w * batch.mask.flatten(1).unsqueeze(-1),
        reg_covar=reg_covar,
        covariance_type=covariance_type,
        gaussians=gaussians,
        initial=initial,
    )
    log_prob = estimate_log_gaussian_prob(
        X,
        means,
        compute_precision_cholesky(covariances, covariance_type),
        covariance_type,
    )
    log_joint = log_prob + (log_w if spatially_variant else weights.log().unsqueeze(1))
    log_likelihood = torch.logsumexp(log_joint, -1)
    if spatially_variant:
        energy = -log_likelihood
    else:
        if initial is not None:
            # log_joint - log_likelihood is the log-posterior
            floored = torch.maximum(
                log_joint, log_likelihood.unsqueeze(-1) + LOG_POSTERIOR_FLOOR
            )
            flat = flat_components(initial, covariance_type).unsqueeze(1)
            log_joint = torch.where(flat, floored, log_joint)
        energy = (w * (log_w - log_joint)).sum(-1)
    return batch.masked_mean(energy), batch.masked_mean(log_likelihood), means


def bound_covariances(covariances, initial, covariance_type):
    """``covariances`` scaled down where their trace exceeds the ``initial``
    fit's, except for flat components.

    Smoothing the responsibilities of a segmentation widens the Gaussians
    estimated from them; a widened broad class then absorbs thin ones, and
    widens further: the bound stops this while letting classes reshape and
    narrow. A flat region (zero padding, a saturated or empty background) is
    a component of almost no variance (below ``FLAT_VARIANCE`` of the data's),
    which the M-step of soft responsibilities cannot hold to EM's: the
    little responsibility the network leaks onto it from other pixels moves
    its mean by many of EM's standard deviations, the flat pixels are then
    far from a component held that narrow, and another component takes them.
    Left free, its covariance grows with the leak and it keeps its pixels.
    """
    reference = component_variances(initial[2], covariance_type).sum(-1)
    trace = component_variances(covariances, covariance_type).sum(-1)
    factor = torch.where(
        flat_components(initial, covariance_type), 1.0, (reference / trace).clamp(max=1.0)
    )
    extra_axes = covariances.ndim - factor.ndim
    return covariances * factor.reshape(factor.shape + (1,) * extra_axes)


def flat_components(initial, covariance_type):
    """Which components of the ``initial`` EM fit are flat regions: a variance
    per feature below ``FLAT_VARIANCE`` of the data's. Shape ``(1, K)``, or
    ``(1, 1)`` for tied covariances."""
    variances = component_variances(initial[2], covariance_type)
    return variances.sum(-1) < FLAT_VARIANCE * initial[1].shape[-1]


def soft_cross_entropy(logits, target_log_resp, batch):
    """Per-image cross-entropy of the network's responsibilities to targets.

    Returns
    -------
    cross_entropy : torch.Tensor of shape (B,)
    """
    log_w = batch.pixels(logits.log_softmax(1))
    return batch.masked_mean(-(target_log_resp.exp() * log_w).sum(-1))


def potts_energy(logits, batch):
    """Per-image expected disagreement of neighbouring pixels' labels.

    The mean, over pairs of neighbouring pixels both inside the mask, of the
    probability ``1 - sum_k w_xk w_yk`` that their labels differ under the
    responsibilities ``w``: the Potts energy of a Markov random field,
    relaxed to probabilities.

    Returns
    -------
    energy : torch.Tensor of shape (B,)
    """
    w = logits.softmax(1)
    energy = count = 0.0
    for axis in range(2, w.ndim):
        length = w.shape[axis] - 1
        agreement = (w.narrow(axis, 0, length) * w.narrow(axis, 1, length)).sum(1)
        pairs = batch.mask.narrow(axis - 1, 0, length) * batch.mask.narrow(
            axis - 1, 1, length
        )
        energy = energy + ((1 - agreement) * pairs).flatten(1).sum(-1)
        count = count + pairs.flatten(1).sum(-1)
    return energy / count.clamp_min(1)


@dataclass
class History:
    """What one run of :func:`optimize` went through."""

    losses: list = field(default_factory=list)
    log_likelihoods: list = field(default_factory=list)
    converged: bool = False
    interrupted: bool = False
    # the iteration whose starting state was restored by the guard, if any
    restored: int | None = None

    @property
    def n_iter(self):
        return len(self.losses)


# Stochastic gradient steps make the loss jitter from one iteration to the
# next; its change is averaged over this many iterations before comparing it
# with ``tol``, so that one small step does not end training early.
_STOPPING_WINDOW = 5


def _mean_change(losses):
    """Decrease of the loss per iteration over the last iterations.

    Infinite until there are enough iterations to average over: starting
    from the initial mixture, the first steps can be tiny.
    """
    if len(losses) <= _STOPPING_WINDOW:
        return math.inf
    return (losses[-1 - _STOPPING_WINDOW] - losses[-1]) / _STOPPING_WINDOW


def optimize(
    network,
    loss_fn,
    batches,
    *,
    learning_rate,
    max_iter,
    tol,
    generator,
    on_iter=None,
    reference_log_likelihood=None,
):
    """Minimise ``loss_fn`` with AdamW, one epoch over ``batches`` per iteration.

    ``loss_fn(network, batch)`` returns ``(loss, log_likelihood)`` (scalars).
    Stops when the epoch loss changes by less than ``tol`` per iteration
    (averaged over the last ``_STOPPING_WINDOW`` iterations), after ``max_iter``
    epochs, or on KeyboardInterrupt, which keeps the network as it is and
    warns.

    With a ``reference_log_likelihood`` (that of the initial EM fit), a guard
    keeps training from ending worse than it started: the floor is
    ``GUARD_NATS`` below the lower of the reference and the first iteration's
    log-likelihood. If the last iteration's log-likelihood is below it (or
    not a number), the network goes back to its state at the start of the
    last iteration that was not, and ``History.restored`` says which.
    """
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate)
    history = History()
    kept, kept_iter = _state(network), 1
    floor = -math.inf
    network.train()
    try:
        for n_iter in range(1, max_iter + 1):
            # snapshots only where the guard may restore one
            state = None if reference_log_likelihood is None else _state(network)
            loss_sum = ll_sum = 0.0
            for batch in batches.shuffled(generator):
                optimizer.zero_grad()
                loss, log_likelihood = loss_fn(network, batch)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(batch)
                ll_sum += float(log_likelihood) * len(batch)
            history.losses.append(loss_sum / len(batches))
            history.log_likelihoods.append(ll_sum / len(batches))
            if n_iter == 1 and reference_log_likelihood is not None:
                floor = (
                    min(reference_log_likelihood, history.log_likelihoods[0])
                    - GUARD_NATS
                )
            if history.log_likelihoods[-1] >= floor:
                kept, kept_iter = state, n_iter
            change = _mean_change(history.losses)
            if on_iter is not None:
                on_iter(n_iter, history.losses[-1], change)
            if abs(change) < tol:
                history.converged = True
                break
    except KeyboardInterrupt:
        history.interrupted = True
        warnings.warn(
            "Training was interrupted; the estimator keeps the network as it "
            "was at the interruption.",
            UserWarning,
        )
    finally:
        network.eval()
    # NaN compares False: a diverged likelihood is restored too
    guarded = reference_log_likelihood is not None and history.log_likelihoods
    if guarded and not history.log_likelihoods[-1] >= floor:
        network.load_state_dict(kept)
        history.restored = kept_iter
    return history


def _state(network):
    """A copy of the network's parameters and buffers."""
    return {name: value.clone() for name, value in network.state_dict().items()}
