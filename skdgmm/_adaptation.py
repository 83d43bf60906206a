"""Responsibilities adapted to each image at inference (``adapt_iter``).

A network trained on some images labels another one by what it learnt, even
where that image's intensities differ (another scanner, another contrast).
Adaptation runs a few EM iterations on each image's own pixels, with the
network's responsibilities as a pixel-wise prior: the E-step weighs each
component's Gaussian (the M-step of the image's current responsibilities)
by its share of the image and by the network's responsibility raised to
``PRIOR_POWER``. The fitted model never changes.
"""

import torch

from ._gaussian import (
    compute_precision_cholesky,
    estimate_gaussian_parameters,
    mixture_posterior,
)

# The network's responsibilities are near 0 or 1 at most pixels: as a prior
# at full strength they leave the image's Gaussians nothing to decide (no
# change on three of the four benchmark sets), with none the image's EM loses
# the network's spatial coherence. A quarter was the best of 1, 0.5, 0.25 and
# 0.1 on three of the four sets, and better than no adaptation on all four
# (docs/quality.md).
PRIOR_POWER = 0.25


def adapt_responsibilities(resp, batch, n_iter, reg_covar, covariance_type):
    """The responsibilities ``resp`` ``(B, K, *spatial)`` of the images of
    ``batch`` after ``n_iter`` EM iterations on each image's pixels inside
    its mask (``reg_covar`` in the likelihood's units); outside the mask
    they are ``resp``'s."""
    # float64 for the M-step's sums over many pixels, where the device has it
    dtype = torch.float32 if resp.device.type == "mps" else torch.float64
    pixels = batch.pixels(batch.x_lik).to(dtype)
    prior = batch.pixels(resp).to(dtype)
    inside = batch.mask.flatten(1).to(dtype).unsqueeze(-1)
    log_prior = PRIOR_POWER * prior.clamp_min(torch.finfo(prior.dtype).tiny).log()
    posterior = prior
    for _ in range(n_iter):
        nk, means, covariances = estimate_gaussian_parameters(
            pixels, posterior * inside, reg_covar, covariance_type
        )
        log_weights = (nk / nk.sum(-1, keepdim=True)).log().unsqueeze(1)
        posterior = mixture_posterior(
            pixels,
            log_weights + log_prior,
            means,
            compute_precision_cholesky(covariances, covariance_type),
            covariance_type,
        )
    adapted = torch.where(inside.bool(), posterior, prior).to(resp.dtype)
    return adapted.mT.reshape(resp.shape)
