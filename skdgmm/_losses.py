"""The losses of training: plain functions of ``(logits, batch)``.

* :func:`mixture_energy`: the mixture's free energy (deepG) or negative
  log-likelihood (deepSVG) of the masked pixels, under the Gaussians of
  :func:`loss_gaussians`;
* :func:`potts_energy`: the spatial prior;
* :func:`label_energy`: the cross-entropy of partial labels, weighted by
  :func:`label_weight`;
* :func:`likelihood_loss` and :func:`pretraining_loss`: the losses that
  :func:`skdgmm._training.optimize` minimises, built from them.
"""

import numpy as np
import torch

from ._gaussian import (
    component_variances,
    compute_precision_cholesky,
    estimate_gaussian_parameters,
    estimate_log_gaussian_prob,
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
        flat_components(initial, covariance_type),
        1.0,
        (reference / trace).clamp(max=1.0),
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


# A labelled pixel's cross-entropy weighs as much in the loss as the energy
# of this many pixels, or more: the labelled pixels together weigh as much as
# all pixels, so that a few labelled images name the classes of a whole
# collection. Collections with 3 labelled slices (weights of 1 to 100, one
# seed; docs/quality.md): MNI152 (12 slices, balanced 2.8) 0.74 / 0.91 Dice
# at 2.8 / 10, MyoPS (42, balanced 14) 0.50 / 0.53 / 0.54 at 10 / 14 / 30,
# EMIDEC (62, balanced 20) 0.59 / 0.63 / 0.54 at 10 / 20 / 30; seeds move
# MNI152 by up to 0.06.
MIN_LABEL_WEIGHT = 10.0


def label_weight(labels, mask):
    """The weight of a labelled pixel's :func:`label_energy` in the loss,
    for the partial ``labels`` (-1 unlabelled, or None) of the pixels of
    ``mask`` (None: all)."""
    if labels is None:
        return 0.0
    n_pixels = labels.size if mask is None else np.count_nonzero(mask)
    balanced = n_pixels / max(1, np.count_nonzero(labels >= 0))
    return max(balanced, MIN_LABEL_WEIGHT)


def label_energy(logits, batch):
    """Per-image cross-entropy of the network's responsibilities to the
    labels of ``batch.labels``: summed over the labelled pixels, divided by
    the pixels in the mask, so that a labelled pixel costs its
    cross-entropy beside its energy.

    Returns
    -------
    energy : torch.Tensor of shape (B,)
    """
    cross_entropy = torch.nn.functional.cross_entropy(
        logits, batch.labels, ignore_index=-1, reduction="none"
    )
    return cross_entropy.flatten(1).sum(-1) / batch.mask.flatten(1).sum(-1).clamp_min(1)


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


def likelihood_loss(
    initial,
    *,
    covariance_type,
    reg_covar,
    spatially_variant,
    gaussians,
    spatial_regularization,
    mean_regularization,
    mean_target,
    label_weight=0.0,
):
    """The training loss: the mixture's energy plus the Potts energy, the
    mean regularization and, for batches with labels, ``label_weight``
    times their :func:`label_energy`, averaged over the images of a batch.

    ``initial`` are the initial Gaussians ``(weights, means, covariances)``
    as tensors with a leading axis of length 1, ``mean_target`` ``(K, F)``
    the target of the mean regularization; both, and ``reg_covar``, in the
    likelihood's units. The loss function returns ``(loss,
    log_likelihood)``, the second detached.
    """

    def loss_fn(network, batch):
        logits = network(batch.x_net)
        energy, log_likelihood, means = mixture_energy(
            logits,
            batch,
            covariance_type=covariance_type,
            reg_covar=reg_covar,
            spatially_variant=spatially_variant,
            # the M-step of a patch would estimate the patch's Gaussians,
            # not the image's
            gaussians="fixed" if batch.is_patch else gaussians,
            initial=initial,
        )
        loss = batch.image_mean(energy)
        if batch.labels is not None:
            loss = loss + label_weight * batch.image_mean(label_energy(logits, batch))
        if spatial_regularization:
            loss = loss + spatial_regularization * batch.image_mean(
                potts_energy(logits, batch)
            )
        if mean_regularization:
            loss = (
                loss
                + mean_regularization
                * (batch.image_mean(means) - mean_target).square().sum()
            )
        return loss, batch.image_mean(log_likelihood).detach()

    return loss_fn


def pretraining_loss(log_weights, means, precisions_chol, covariance_type):
    """The loss that fits the network to the posteriors of a Gaussian
    mixture (tensors of its parameters, with a leading axis of length 1 for
    the means and precisions): the soft cross-entropy; the loss function
    returns ``(loss, divergence)``, the second the Kullback-Leibler
    divergence of the network's responsibilities from the posteriors (nats
    per pixel, detached), which tells how close the network has come."""

    def loss_fn(network, batch):
        log_prob = estimate_log_gaussian_prob(
            batch.pixels(batch.x_lik), means, precisions_chol, covariance_type
        )
        target = (log_prob + log_weights).log_softmax(-1)
        if batch.labels is not None:
            # a labelled pixel's target is its class
            labels = batch.labels.flatten(1)
            one_hot = torch.nn.functional.one_hot(labels.clamp_min(0), target.shape[-1])
            target = torch.where(
                (labels >= 0).unsqueeze(-1), one_hot.to(target.dtype).log(), target
            )
        cross_entropy = soft_cross_entropy(network(batch.x_net), target, batch)
        # a posterior of exactly 0 contributes nothing (0 log 0 = 0)
        entropy = -(target.exp() * target).nan_to_num(0.0).sum(-1)
        divergence = cross_entropy - batch.masked_mean(entropy)
        return batch.image_mean(cross_entropy), batch.image_mean(divergence).detach()

    return loss_fn
