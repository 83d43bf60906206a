"""Fitting a deep Gaussian mixture: the initializations, their training,
and the fitted Gaussians.

The estimator validates its input and hands over tensors
(:class:`skdgmm._data.ImageBatches`) and its hyper-parameters
(:class:`Settings`); :func:`train` returns the best initialization and
:func:`fitted_mixture` the M-step of its network's responsibilities. Nothing
here reads or writes the estimator.
"""

import contextlib
import copy
import functools
import math
import warnings
from dataclasses import dataclass, fields

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from tqdm.auto import tqdm

from ._data import batch_labels
from ._gaussian import (
    component_variances,
    compute_precision_cholesky,
    estimate_gaussian_parameters,
    mixture_log_likelihood,
    mixture_posterior,
    precision_shape,
    precisions_from_cholesky,
)
from ._layout import as_array
from ._losses import flat_components, label_weight, likelihood_loss, pretraining_loss
from ._networks import UNet, build_network, unet_depth
from ._training import GUARD_NATS, History, optimize

# Most pixels whose responsibilities give the fitted Gaussians.
POOLED_PIXELS = 2**21
# EM iterations of the initial mixture (GaussianMixture's default).
_INITIAL_EM_ITER = 100
# Beside a flat region, pre-training goes on until the network's
# responsibilities are this close to the initial EM posteriors
# (Kullback-Leibler divergence, nats per pixel), for at most
# FLAT_PRETRAINING times init_iter iterations. From softer responsibilities
# the M-step of a small class averages over the whole image, most of it the
# flat region (zero padding, a background): its mean falls into the flat
# region and the class empties (unmasked MNI152 slices after 20 iterations:
# a divergence of 0.55, two of four classes lost). Elsewhere the few
# iterations of init_iter are kept: the smoother network is a better prior
# (masked MyoPS slices: 0.537 / 0.529 / 0.526 / 0.511 Dice after 15 / 20 /
# 25 / 100 iterations; EMIDEC and MyoPS lose 0.014-0.016 when stopped on
# the divergence), unless training empties a component (see EMPTIED): the
# fit is then trained again from the closer network
# (a small class beside larger ones can empty without a flat region: CSF of
# the three masked MNI152 slices, with or without a prior). The cost: a
# second training where it happens, and on a MyoPS slice of one tissue,
# where EM too uses three components, 0.34 Dice (two classes absent from
# the truth and the labels scored 1).
PRETRAINED_DIVERGENCE = 0.05
FLAT_PRETRAINING = 5
# A component that training leaves with less than this share of the pixels
# the pre-trained network gave it has emptied, and the fit is trained again:
# pre-trained closer to EM as above or, where it already was (beside a flat
# region), with the Gaussians held at the initial EM's. A class can shrink
# to a few pixels rather than none (CSF of unmasked MNI152 slices: 4.8 % of
# the pixels after pre-training, 0.45 % after training, Dice 0.59 against
# EM's 0.89), while smoothing the fragments EM labels shrinks a class by
# less (masked MNI152 slices, and every third MyoPS slice: the smallest
# share kept 0.38-0.94 of its pre-trained share, but where one emptied).
EMPTIED = 0.2
# Pre-training iterations of init_iter="auto": fewer where the fit has
# labels, whose cross-entropy then names the classes from the first
# training step. Collections with 3 labelled slices, seeds 0-2, mean Dice
# and seconds at 20 / 8 / 4 / 0 iterations: MyoPS 0.534 (26.5 s) / 0.539 /
# 0.532 (12.5 s) / 0.524; MNI152 0.880 / 0.879 / 0.881 / 0.772 (a class
# lost); EMIDEC 0.626 (22.9 s) / 0.640 / 0.640 (12.4 s) / 0.643; DSB 0.544
# (68.9 s) at 20, 0.530 (46.0 s) at 4.
INIT_ITER = 20
LABELLED_INIT_ITER = 4


# The settings that give the initial mixture, in the input's units.
INITS = ("weights_init", "means_init", "precisions_init")


@dataclass(frozen=True)
class Settings:
    """The hyper-parameters of :class:`skdgmm.DeepGaussianMixture` that
    training reads (see its docstring), in the input's units."""

    n_components: int
    covariance_type: str
    tol: float
    reg_covar: float
    max_iter: int
    n_init: int
    init_params: str
    weights_init: object
    means_init: object
    precisions_init: object
    verbose: int
    verbose_interval: int
    spatially_variant: bool
    network_width: int
    network_depth: int
    learning_rate: float
    init_iter: object  # int or "auto"
    mean_regularization: float
    spatial_regularization: float
    gaussians: str

    @classmethod
    def from_params(cls, params):
        """Settings from an estimator's ``get_params()``; ``*_init`` arrays
        are read as ``X`` is (a torch tensor on the CPU becomes a NumPy
        array, also under scikit-learn's ``array_api_dispatch``)."""
        settings = {f.name: params[f.name] for f in fields(cls)}
        for name in INITS:
            if settings[name] is not None:
                settings[name] = as_array(settings[name], name)
        return cls(**settings)

    def check_sizes(self, n_pixels, n_features):
        """A ValueError if there are fewer pixels than components, or a
        ``*_init`` parameter is not shaped for ``n_features`` features."""
        if n_pixels < max(2, self.n_components):
            raise ValueError(
                f"Expected n_samples >= n_components and at least 2 samples but "
                f"got n_components = {self.n_components}, n_samples = "
                f"{n_pixels} (pixels inside the mask)."
            )
        for name, value, shape in [
            ("weights_init", self.weights_init, (self.n_components,)),
            ("means_init", self.means_init, (self.n_components, n_features)),
            (
                "precisions_init",
                self.precisions_init,
                precision_shape(self.covariance_type, self.n_components, n_features),
            ),
        ]:
            if value is not None and np.shape(value) != shape:
                raise ValueError(
                    f"{name} should have the shape {shape} "
                    f"(n_components={self.n_components}, n_features={n_features}, "
                    f"covariance_type={self.covariance_type!r}); got {np.shape(value)}."
                )

    def say(self, level, message):
        """Print ``message`` if ``verbose`` is at least ``level``."""
        if self.verbose >= level:
            print(message)


@dataclass
class Run:
    """One trained initialization."""

    network: torch.nn.Module
    history: History
    # the initial EM fit (weights, means, covariances) in the likelihood's units
    initial: tuple


@dataclass(frozen=True)
class _Problem:
    """What every initialization of one fit trains on."""

    batches: object
    layout: object
    scaling: object
    settings: Settings
    # a sample of the training pixels in the likelihood's units
    scaled: np.ndarray


class TrainingDiverged(ValueError):
    """The network's responsibilities are not finite."""


def _better(log_likelihood, best):
    """Whether a run whose fitted Gaussians have this mean
    ``log_likelihood`` beats the ``best`` one so far (that of the best run,
    or None): a higher likelihood, as GaussianMixture picks its
    initializations, and any number over one that is not (a diverged run).
    """
    return (
        best is None
        or log_likelihood > best
        or (np.isnan(best) and not np.isnan(log_likelihood))
    )


def train(
    batches,
    pixels,
    n_pixels,
    layout,
    scaling,
    settings,
    random_state,
    device,
    warm=None,
):
    """Train ``settings.n_init`` initializations; the best :class:`Run` and
    its :class:`FittedMixture`.

    The best run is the one whose fitted Gaussians (see
    :func:`fitted_mixture`) give the training pixels the highest likelihood,
    the ``lower_bound_`` the estimator reports; a diverged run never beats
    a finite one, and :class:`TrainingDiverged` is raised if all diverge.
    ``pixels`` are a sample of the training pixels in the input's units
    (for the initial EM fit), ``n_pixels`` their number. With ``warm`` (a
    :class:`Run` of an earlier fit), training continues its network once
    instead. An interruption (Ctrl-C) of training keeps the network as it
    is (see :func:`~skdgmm._training.optimize`) and ends the
    initializations; one anywhere else in a later initialization keeps the
    best so far.
    """
    problem = _Problem(batches, layout, scaling, settings, scaling.pixels(pixels))
    best = diverged = None  # best: (run, its fitted mixture)
    for init in range(1 if warm else settings.n_init):
        settings.say(2, f"Initialization {init}")
        try:
            run, interrupted = _initialization(
                problem, init, random_state, device, warm
            )
            mixture = fitted_mixture(run, batches, n_pixels, scaling, settings, device)
        except TrainingDiverged as error:
            diverged = error
        except KeyboardInterrupt:
            if best is None:
                raise
            _warn_best_so_far()
            break
        else:
            converged = "converged" if run.history.converged else "did not converge"
            settings.say(
                2,
                f"Initialization {converged}. lower bound "
                f"{mixture.log_likelihood:.5f}.",
            )
            if _better(mixture.log_likelihood, best and best[1].log_likelihood):
                best = run, mixture
        if interrupted:
            break
    if best is None:
        raise diverged
    # with labels, training trades likelihood for their cross-entropy
    if warm and batches.labels is None:
        return _no_worse_than_start(warm, best, problem, n_pixels, device)
    return best


def _no_worse_than_start(warm, best, problem, n_pixels, device):
    """The result ``best`` (run, mixture) of a warm start, or where it gives
    the training pixels a lower likelihood than the model it continued
    (gradient steps are not monotone as EM's are), that model, converged:
    its Gaussians the M-step of its responsibilities on these pixels."""
    settings = problem.settings
    start = fitted_mixture(
        Run(copy.deepcopy(warm.network), warm.history, warm.initial),
        problem.batches,
        n_pixels,
        problem.scaling,
        settings,
        device,
    )
    if not start.log_likelihood > best[1].log_likelihood:
        return best
    settings.say(
        1,
        "Training lowered the likelihood of the model it continued; keeping "
        "that model (converged).",
    )
    history = warm.history.continued(
        History(
            converged=True,
            # an interruption still ends what called the training
            interrupted=best[0].history.interrupted,
            optimizer_state=warm.history.optimizer_state,
            steps=warm.history.steps,
        )
    )
    return Run(warm.network, history, warm.initial), start


def _initialization(problem, init, random_state, device, warm):
    """Initialization number ``init`` trained (or with ``warm``, the earlier
    fit's training continued): its :class:`Run`, and whether it was
    interrupted."""
    batches, settings = problem.batches, problem.settings
    # whether patches are cut can depend on the shuffled batches
    batches.patched = False
    generator = torch.Generator().manual_seed(
        int(random_state.randint(np.iinfo(np.int32).max))
    )
    if warm:
        network = copy.deepcopy(warm.network).to(device)
        run = _train_run(
            problem, network, warm.initial, History(), generator, init, warm.history
        )
        return run, run.history.interrupted
    em = initial_mixture(problem.scaled, settings, problem.scaling, random_state)
    initial = (em.weights_, em.means_, em.covariances_)
    close = has_flat_component(em, batches, settings)
    network = new_network(batches, problem.layout, settings, generator, device)
    pretraining = pretrain(network, em, batches, settings, generator, close)
    # the classes that training must keep, where a retry can keep them: it
    # pre-trains close to EM or, where that was done, holds EM's Gaussians
    retry = settings.max_iter > 0 and not (close and settings.gaussians == "fixed")
    pretrained = (
        _label_counts(network, batches, settings.n_components) if retry else None
    )
    run = _train_run(problem, network, initial, pretraining, generator, init)
    if not retry or run.history.interrupted:
        return run, run.history.interrupted
    return _retrain_if_emptied(
        problem, run, em, pretrained, generator, init, device, hold=close
    )


def _warn_best_so_far():
    warnings.warn(
        "Training was interrupted; the estimator keeps the best initialization so far.",
        UserWarning,
    )


def _label_counts(network, batches, n_components):
    """How many training pixels the ``network`` gives each component,
    normalised as it will predict them (by the running statistics where
    training cuts patches, see :func:`_train_run`)."""
    counts = torch.zeros(n_components, dtype=torch.long)
    patched = isinstance(network, UNet) and batches.patched
    statistics = UNet.running_statistics() if patched else contextlib.nullcontext()
    with torch.no_grad(), statistics:
        for batch, labels in batch_labels(network, batches):
            inside = labels[batch.mask.bool()]
            counts += torch.bincount(inside, minlength=n_components).cpu()
    return counts.numpy()


def _retrain_if_emptied(
    problem, run, mixture, pretrained, generator, init, device, hold
):
    """``run``, or where its training emptied components that its pretrained
    network labelled, the run trained again from a network pre-trained
    close to the initial EM (see ``PRETRAINED_DIVERGENCE``), with the
    Gaussians of the initial EM held fixed if ``hold`` (the first run was
    pre-trained that close); and whether that was interrupted (the first
    run is then kept)."""
    batches, settings = problem.batches, problem.settings
    try:
        trained = _label_counts(run.network.to(device), batches, settings.n_components)
        run.network.cpu()
        emptied = np.flatnonzero(trained < EMPTIED * pretrained).tolist()
        if not emptied:
            return run, False
        how = (
            "with the Gaussians held at the initial EM's"
            if hold
            else "from a network pre-trained closer to the initial EM"
        )
        settings.say(
            1, f"Components {emptied} emptied in training; training again {how}."
        )
        network = new_network(batches, problem.layout, settings, generator, device)
        pretraining = pretrain(network, mixture, batches, settings, generator, True)
        retrained = _train_run(
            problem,
            network,
            run.initial,
            pretraining,
            generator,
            init,
            gaussians="fixed" if hold else None,
        )
        interrupted = retrained.history.interrupted
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        run.network.cpu()
        warnings.warn(
            "The second training of a fit that emptied a component was "
            "interrupted; the estimator keeps the first training.",
            UserWarning,
        )
        return run, True
    return retrained, False


def _train_run(
    problem,
    network,
    initial,
    pretraining,
    generator,
    init,
    previous=None,
    gaussians=None,
):
    """Optimise the likelihood loss of initialization number ``init``, from
    its ``initial`` Gaussians and ``pretraining`` (a :class:`History`), or
    continuing a ``previous`` training; ``gaussians`` overrides the
    setting's mode."""
    batches, settings = problem.batches, problem.settings
    loss_fn = _likelihood_loss(initial, problem, gaussians or settings.gaussians)
    if pretraining.interrupted:
        history = History(interrupted=True)
    else:
        with tqdm(
            total=settings.max_iter,
            desc=f"Initialization {init}",
            unit="it",
            disable=settings.verbose != 1,
        ) as progress:
            history = optimize(
                network,
                loss_fn,
                batches,
                learning_rate=settings.learning_rate,
                max_iter=settings.max_iter,
                tol=settings.tol,
                generator=generator,
                on_iter=functools.partial(_report_iter, settings, progress),
                reference_log_likelihood=_initial_log_likelihood(
                    problem.scaled, initial, settings.covariance_type
                ),
                previous=previous,
                # the network was pre-trained: a fresh optimizer must not
                # throw it out of where pre-training brought it. Not with
                # labels: their cross-entropy names the classes from the
                # first step (pre-training is short for that), and a slow
                # start left a tabular fit of 20 iterations 70 % right
                warmup=batches.labels is None,
                # with labels the loss has their cross-entropy (of these
                # labels): the earlier training's losses do not compare
                new_loss=batches.labels is not None,
            )
        if previous is not None:
            history = previous.continued(history)
        if history.restored is not None:
            settings.say(
                1,
                f"The log-likelihood fell more than {GUARD_NATS} nats per "
                f"pixel below where training started; keeping the network "
                f"of iteration {history.restored}.",
            )
    if isinstance(network, UNet) and batches.patched:
        # a warm start on whole images keeps what it was trained on
        network.trained_on_patches.fill_(True)
    return Run(network.cpu(), history, initial)


def _report_iter(settings, progress, n_iter, loss, change):
    progress.update()
    progress.set_postfix(loss=f"{loss:.4f}", change=f"{change:.2g}", refresh=False)
    if n_iter % settings.verbose_interval == 0:
        settings.say(2, f"  Iteration {n_iter}\t loss change {change:.5f}")


def initial_mixture(scaled, settings, scaling, random_state):
    """The initial mixture: a GaussianMixture fitted by EM on the ``scaled``
    pixels (likelihood units), started as ``init_params`` and the
    ``*_init`` settings say."""
    means_init = settings.means_init
    if means_init is not None:
        means_init = scaling.pixels(means_init)
    precisions_init = settings.precisions_init
    if precisions_init is not None:
        precisions_init = scaling.precisions(precisions_init)
    # GaussianMixture(max_iter=0) started from precisions_init fails (it
    # has no covariances_ to return): it starts without them, and they are
    # set as its initialization would have set them
    initialization = settings.max_iter == 0 and precisions_init is not None
    with warnings.catch_warnings():
        # the network's training decides convergence, not this EM
        warnings.simplefilter("ignore", ConvergenceWarning)
        em = GaussianMixture(
            settings.n_components,
            covariance_type=settings.covariance_type,
            tol=settings.tol,
            reg_covar=scaling.variance(settings.reg_covar),
            init_params=settings.init_params,
            weights_init=settings.weights_init,
            means_init=means_init,
            precisions_init=None if initialization else precisions_init,
            # max_iter=0 returns the initialization, as GaussianMixture does
            max_iter=_INITIAL_EM_ITER if settings.max_iter else 0,
            random_state=random_state,
        ).fit(scaled)
    if initialization:
        full = settings.covariance_type in ("full", "tied")
        em.covariances_ = (
            np.linalg.inv(precisions_init) if full else 1.0 / precisions_init
        )
        em.precisions_cholesky_ = compute_precision_cholesky(
            torch.as_tensor(em.covariances_), settings.covariance_type
        ).numpy()
        em.precisions_ = np.asarray(precisions_init, dtype=float)
    return em


def new_network(batches, layout, settings, generator, device):
    """A network for the images of ``batches``, its weights drawn from
    ``generator``."""
    return build_network(
        batches.X.shape[1],
        settings.n_components,
        kind="pixel" if layout.tabular else "unet",
        width=settings.network_width,
        depth=unet_depth(batches.X.shape[2:], settings.network_depth),
        spatial_dims=layout.network_dims,
        generator=generator,
    ).to(device=device, dtype=batches.dtype)


def has_flat_component(mixture, batches, settings):
    """Whether the initial EM ``mixture`` has a flat component (decided in
    the batches' dtype, as the likelihood loss decides it)."""
    initial = (mixture.weights_, mixture.means_, mixture.covariances_)
    initial = tuple(batches.tensor(p)[None] for p in initial)
    return bool(flat_components(initial, settings.covariance_type).any())


def pretraining_iterations(init_iter, labelled, close):
    """The most pre-training iterations: ``init_iter`` ("auto":
    ``INIT_ITER``, or ``LABELLED_INIT_ITER`` for a fit with labels), times
    ``FLAT_PRETRAINING`` where pre-training goes on until it is ``close``
    to the initial EM (and "auto" is then ``INIT_ITER``, labels or not)."""
    if init_iter == "auto":
        init_iter = LABELLED_INIT_ITER if labelled and not close else INIT_ITER
    return init_iter * (FLAT_PRETRAINING if close else 1)


def pretrain(network, mixture, batches, settings, generator, close):
    """Fit the network to the posteriors of the initial GaussianMixture
    for :func:`pretraining_iterations` iterations: the smooth approximation
    a network learns first is its spatial prior. With ``close``, until the
    network comes within ``PRETRAINED_DIVERGENCE`` of them instead."""
    loss_fn = pretraining_loss(
        batches.tensor(np.log(mixture.weights_)),
        batches.tensor(mixture.means_)[None],
        batches.tensor(mixture.precisions_cholesky_)[None],
        settings.covariance_type,
    )
    return optimize(
        network,
        loss_fn,
        batches,
        learning_rate=settings.learning_rate,
        max_iter=pretraining_iterations(
            settings.init_iter, batches.labels is not None, close
        ),
        # a fixed number of iterations, or until stop_below
        tol=-math.inf,
        generator=generator,
        stop_below=PRETRAINED_DIVERGENCE if close else None,
    )


def _likelihood_loss(initial, problem, gaussians):
    batches, scaling, settings = problem.batches, problem.scaling, problem.settings
    initial = tuple(batches.tensor(p)[None] for p in initial)
    if settings.means_init is None:
        mean_target = initial[1][0]
    else:
        mean_target = batches.tensor(scaling.pixels(settings.means_init))
    return likelihood_loss(
        initial,
        covariance_type=settings.covariance_type,
        reg_covar=scaling.variance(settings.reg_covar),
        spatially_variant=settings.spatially_variant,
        gaussians=gaussians,
        # tabular samples have no neighbours
        spatial_regularization=0.0
        if problem.layout.tabular
        else settings.spatial_regularization,
        mean_regularization=settings.mean_regularization,
        mean_target=mean_target,
        label_weight=label_weight(batches.labels, batches.mask),
    )


def _initial_log_likelihood(scaled, initial, covariance_type):
    """Mean log-likelihood of the ``scaled`` pixels under the initial EM fit."""
    weights, means, covariances = (
        torch.as_tensor(p, dtype=torch.float64)[None] for p in initial
    )
    return float(
        mixture_log_likelihood(
            torch.as_tensor(scaled, dtype=torch.float64)[None],
            weights.log()[:, None],
            means,
            compute_precision_cholesky(covariances, covariance_type),
            covariance_type,
        ).mean()
    )


@dataclass
class FittedMixture:
    """The fitted Gaussians, in the input's units (see :func:`fitted_mixture`)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    precisions: np.ndarray
    # mean log-likelihood of the training pixels
    log_likelihood: float
    # training pixels each component labels (of those the M-step used)
    labelled: np.ndarray


def fitted_mixture(run, batches, n_pixels, scaling, settings, device):
    """The fitted Gaussians: the M-step of the ``run``'s network's
    responsibilities over all ``n_pixels`` training pixels (at most
    ``POOLED_PIXELS`` of them, evenly spaced, for large collections), so
    that the weights are the share of the pixels each component is
    responsible for and their likelihood is that of the model whose labels
    the network gives; with ``max_iter=0``, the run's initial Gaussians.
    """
    covariance_type = settings.covariance_type
    stride = -(-n_pixels // POOLED_PIXELS)
    network = run.network.to(device)
    resp, pixels = [], []
    with torch.no_grad():
        for batch in batches.ordered():
            keep = batch.mask.flatten(1).bool()
            logits = network(batch.x_net)
            resp.append(batch.pixels(logits.softmax(1))[keep][::stride].cpu())
            pixels.append(batch.pixels(batch.x_lik)[keep][::stride].cpu())
    network.cpu()
    resp = torch.cat(resp).double()[None]
    pixels = torch.cat(pixels).double()[None]
    if not bool(torch.isfinite(resp).all()):
        raise TrainingDiverged(
            "Training diverged: the network's responsibilities are not finite. "
            "Try a smaller learning_rate, or scale the input data."
        )
    labelled = np.bincount(resp[0].argmax(-1).numpy(), minlength=settings.n_components)
    if settings.max_iter == 0:
        # as GaussianMixture(max_iter=0): the initialization
        nk, means, covariances = (
            torch.as_tensor(p, dtype=torch.float64)[None] for p in run.initial
        )
    else:
        nk, means, covariances = _m_step(pixels, resp, scaling, settings, run.initial)
    precisions_chol = compute_precision_cholesky(covariances, covariance_type)
    precisions = precisions_from_cholesky(precisions_chol, covariance_type)
    weights = nk / nk.sum()
    log_weights = resp.log() if settings.spatially_variant else weights.log()[:, None]
    log_likelihood = mixture_log_likelihood(
        pixels, log_weights, means, precisions_chol, covariance_type
    )
    gaussians = scaling.gaussians_to_input(
        *(p.numpy()[0] for p in (means, covariances, precisions_chol, precisions))
    )
    return FittedMixture(
        weights.numpy()[0],
        *gaussians,
        scaling.log_density_to_input(float(log_likelihood.mean())),
        labelled,
    )


def _m_step(pixels, resp, scaling, settings, initial):
    """The M-step of the network's responsibilities ``resp`` of ``pixels``
    (likelihood units, with a leading axis of length 1), cleaned by one
    E-step: ``nk, means, covariances``. ``initial`` are the run's initial
    Gaussians."""
    covariance_type = settings.covariance_type
    reg_covar = scaling.variance(settings.reg_covar)
    _, means, covariances = estimate_gaussian_parameters(
        pixels, resp, reg_covar, covariance_type
    )
    # The softmax leaks a little responsibility onto components that
    # cannot explain a pixel, and the network's spatial prior gives a flat
    # region's label to a few pixels around it (the ramp at the edge of a
    # scan's field of view): a flat region's Gaussian (variance near
    # reg_covar) widens by orders of magnitude with either. One E-step with
    # the network's responsibilities as pixel-wise prior, a flat region's
    # pixels weighed by the initial EM's Gaussian of it, removes both and
    # leaves confident responsibilities as they are. With the widened
    # Gaussian instead, 223 pixels of the ramp (0.3 %) of an unmasked EMIDEC
    # slice (256², 16 % zero padding) stayed in the padding's Gaussian, 0.51
    # nats per pixel below GaussianMixture's likelihood.
    if covariance_type != "tied":
        initial = tuple(torch.as_tensor(p, dtype=torch.float64)[None] for p in initial)
        held = _held_flat_components(pixels, resp, initial, covariance_type)
        means = torch.where(held.unsqueeze(-1), initial[1], means)
        held = held.reshape(held.shape + (1,) * (covariances.ndim - held.ndim))
        covariances = torch.where(held, initial[2], covariances)
    posterior = mixture_posterior(
        pixels,
        resp.log(),
        means,
        compute_precision_cholesky(covariances, covariance_type),
        covariance_type,
    )
    return estimate_gaussian_parameters(pixels, posterior, reg_covar, covariance_type)


def _held_flat_components(pixels, resp, initial, covariance_type):
    """Which components of the ``initial`` EM fit are flat regions that
    the responsibilities ``resp`` of ``pixels`` still give them: most of
    each one's responsibility on pixels within 3 of its standard deviations
    per feature. A warm start on other images, where the flat region has
    another value, holds none. Shape ``(1, K)``."""
    flat = flat_components(initial, covariance_type)[0]
    held = torch.zeros_like(resp[0, 0], dtype=torch.bool)
    variances = component_variances(initial[2], covariance_type)
    for k in flat.nonzero().flatten().tolist():
        distance = (pixels[0] - initial[1][0, k]) ** 2 / variances[0, k]
        near = (distance <= 9.0).all(-1).to(resp.dtype)
        held[k] = (resp[0, :, k] * near).sum() >= 0.5 * resp[0, :, k].sum()
    return held[None]


def fitted_attributes(run, mixture, scaling, rescaling):
    """The fitted attributes of the estimator for the best ``run`` and its
    fitted ``mixture``, and the private ones that inference and warm starts
    read (the input's units, the initial Gaussians, the history)."""
    return dict(
        _scaling=scaling,
        _intensity_rescaling=rescaling,
        _initial_gaussians=run.initial,
        network_=run.network,
        converged_=run.history.converged,
        n_iter_=run.history.n_iter,
        lower_bounds_=[
            float(scaling.log_density_to_input(value))
            for value in run.history.log_likelihoods
        ],
        loss_curve_=[
            float(-scaling.log_density_to_input(-loss)) for loss in run.history.losses
        ],
        _history=run.history,
        lower_bound_=float(mixture.log_likelihood),
        weights_=mixture.weights,
        means_=mixture.means,
        covariances_=mixture.covariances,
        precisions_cholesky_=mixture.precisions_cholesky,
        precisions_=mixture.precisions,
    )


def warn_if_emptied(mixture, settings):
    """A warning that names the components of the fitted ``mixture`` that
    label no training pixel."""
    if (mixture.labelled == 0).any():
        warnings.warn(
            f"Components {np.flatnonzero(mixture.labelled == 0).tolist()} of "
            f"{settings.n_components} label no training pixel: the fitted model "
            "segments into fewer classes. Try fewer components, a smaller "
            "spatial_regularization, or another random_state.",
            UserWarning,
        )


def warn_if_not_converged(history, settings):
    """A ConvergenceWarning if training stopped on ``max_iter``."""
    if not history.converged and settings.max_iter > 0 and not history.interrupted:
        warnings.warn(
            "Best performing initialization did not converge. "
            "Try different init parameters, or increase max_iter, "
            "tol, or check for degenerate data.",
            ConvergenceWarning,
        )
