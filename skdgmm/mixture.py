"""Deep Gaussian mixture model (Schwab, Mayr & Haltmeier, arXiv 2404.12252)."""

import copy
import functools
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._gaussian import (
    compute_precision_cholesky,
    estimate_gaussian_parameters,
    estimate_log_gaussian_prob,
    mixture_log_likelihood,
    precisions_from_cholesky,
)
from ._layout import (
    channels_first,
    channels_last,
    count_pixels,
    mask_channels_first,
    sample_pixels,
    validate_input,
)
from ._networks import UNet, build_network, unet_depth
from ._training import (
    GUARD_NATS,
    History,
    ImageBatches,
    Scaling,
    mixture_energy,
    optimize,
    potts_energy,
    soft_cross_entropy,
)

# Pixels drawn for the input's scaling and the initial EM fit.
_INITIAL_PIXELS = 100_000
# Most pixels whose responsibilities give the fitted Gaussians.
_POOLED_PIXELS = 2**21


def _resolve_device(device):
    """``"auto"`` -> cuda, then mps, then cpu; anything else as torch reads it.

    Raises
    ------
    ValueError
        If ``device`` is not a device name or is not available here.
    """
    if device != "auto":
        try:
            device = torch.device(device)
        except RuntimeError as error:
            raise ValueError(
                f"device must be 'auto' or a torch device such as 'cpu', 'cuda', "
                f"'cuda:1' or 'mps'; got {device!r}."
            ) from error
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as error:
            raise ValueError(
                f"Device {str(device)!r} is not available here."
            ) from error
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _precision_shape(covariance_type, n_components, n_features):
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]


class DeepGaussianMixture(DensityMixin, BaseEstimator):
    """Deep Gaussian mixture model for unsupervised image segmentation.

    A convolutional network maps each image to per-pixel responsibilities
    ``w[x, k]`` (a softmax over components). The Gaussian parameters are the
    closed-form M-step of these responsibilities on each image, and the network
    is trained by gradient steps on the mixture's negative log-likelihood of
    the pixels: the E-step of EM becomes a gradient step on the network. Labels
    are ``argmax_k w[x, k]``; a trained network labels new images in one
    forward pass.

    Every parameter of :class:`sklearn.mixture.GaussianMixture` is accepted
    with the same name, default and meaning. On tabular data the network looks
    at each sample alone, so the model is a Gaussian mixture fitted by
    gradient descent; on image stacks it is a U-Net.

    Parameters
    ----------
    n_components : int, default=1
        The number of mixture components (segmentation classes).

    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Type of covariance parameters, as in GaussianMixture.

    tol : float, default=1e-3
        Training stops when the loss (per pixel) changes by less than ``tol``
        per iteration, averaged over the last five iterations (gradient steps
        make single changes noisy).

    reg_covar : float, default=1e-6
        Non-negative regularization added to the diagonal of covariances, in
        the units of the input.

    max_iter : int, default=100
        Maximum number of training iterations (passes over the training set).

    n_init : int, default=1
        Number of initializations; the one with the lowest final loss is kept.

    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, \
            default="kmeans"
        How the initial responsibilities are computed, as in GaussianMixture.
        The network is first trained to reproduce them.

    weights_init : array-like of shape (n_components,), default=None
        Initial weights, as in GaussianMixture.

    means_init : array-like of shape (n_components, n_features), default=None
        Initial means, as in GaussianMixture. Also the target of
        ``mean_regularization``.

    precisions_init : array-like, default=None
        Initial precisions, shaped as in GaussianMixture.

    random_state : int, RandomState instance or None, default=None
        Controls the initialization, the network's weights and the order of
        mini-batches. An int gives identical results on CPU from call to call.

    warm_start : bool, default=False
        If True, ``fit`` continues training the fitted network (``n_init`` is
        then ignored).

    verbose : int, default=0
        Show progress: 1 a progress bar of the training iterations (tqdm; a
        widget in notebooks), 2 printed messages for the initializations and
        every ``verbose_interval`` iterations.

    verbose_interval : int, default=10
        Number of iterations between two progress messages.

    spatially_variant : bool, default=False
        If True, use the network's responsibilities as pixel-wise mixing
        weights in the likelihood (deepSVG, the spatially variant mixture);
        otherwise one weight per component and image (deepG).

    spatial_dims : {2, 3}, default=2
        Spatial dimensions of image stacks: 2 for ``(n, H, W[, C])``, 3 for
        volumes ``(n, D, H, W[, C])``. Ignored for 2-D (tabular) input.

    network_width : int, default=8
        Channels of the first layer of the network (doubled at each level of
        the U-Net).

    network_depth : int, default=2
        Maximum number of down-sampling steps of the U-Net; reduced for small
        images.

    learning_rate : float, default=1e-2
        Learning rate of the AdamW optimizer.

    batch_size : int, default=8
        Images per mini-batch; tabular data is always one batch.

    patch_pixels : int or None, default=65536
        Largest image (pixels inside the mask's box) trained on whole: larger
        images are trained on a random square (cubic) patch of at most this
        many pixels per iteration, so that an iteration costs the same
        whatever their size; the loss of a patch uses the initial EM fit
        (see ``gaussians``). Tabular data of more than ``patch_pixels``
        samples is trained on random runs of samples in the same way. None
        trains on whole images. Inference always sees whole images (in
        overlapping tiles when they are very large); a network trained on
        patches normalises its features there with the statistics it
        recorded in training rather than the image's own.

    init_iter : int, default=20
        Iterations fitting the network to the responsibilities of the initial
        Gaussian mixture (fitted by EM, started as ``init_params`` says)
        before the likelihood is optimized. Few iterations leave the network
        with the smooth approximation it learns first: its spatial prior.

    mean_regularization : float, default=0.0
        Weight of the penalty ``sum_k ||m_k - mean_batch(mu_k)||^2`` (in units
        of the input's spread) pulling the per-image means towards ``m``: the
        ``means_init`` when given, otherwise the initial means. It keeps the
        class order the same across images. It acts through the M-step, so
        not with ``gaussians="fixed"`` nor on patches of large images (see
        ``patch_pixels``).

    spatial_regularization : float, default=4.0
        Weight of the Potts energy: the probability, averaged over pairs of
        neighbouring pixels in the mask, that their labels differ. It makes
        the network minimise a posterior energy (likelihood plus a Markov
        random field prior) rather than the likelihood alone, which favours
        spatially coherent regions. No effect on tabular data.

    gaussians : {"bounded", "free", "fixed"}, default="bounded"
        How the Gaussians of the loss follow the network.

        - "free": the closed-form M-step of the network's responsibilities on
          each image, at every step: the paper's model. With a strong
          ``spatial_regularization`` a broad class can absorb thin or small
          ones.
        - "bounded": means and covariances as in "free", but each covariance
          no larger (in trace) than in the initial EM fit, and the mixing
          weights of the initial EM fit. Classes can reshape to spatially
          coherent regions without a broad class swallowing a thin one. A
          flat component (zero padding, an empty or saturated background:
          an initial variance below 1 % of the data's) keeps its free
          covariance, which grows with what the network leaks onto it
          rather than losing its pixels.
        - "fixed": the Gaussians of the initial EM fit; the network shapes
          only the responsibilities (a Potts-regularised posterior).

        On patches (see ``patch_pixels``) the training loss uses the initial
        EM fit in every mode: the M-step of a patch would estimate the
        patch's classes, not the image's, and a thin class could be
        absorbed.

        Whatever the mode, the fitted ``weights_``, ``means_`` and
        ``covariances_`` are the M-step of the final network's
        responsibilities on all the training pixels (inside the mask; whole
        images, not patches; pooled over the images of a collection), so
        that ``weights_`` agree with the share of the pixels each label
        takes and ``score``, ``bic`` and ``aic`` are the likelihood of the
        model whose labels ``predict`` gives.

    device : str or torch.device, default="auto"
        Where to train: "auto" picks CUDA, then MPS, then the CPU.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
        Share of the training pixels (inside the mask, over all training
        images) each component is responsible for.

    means_ : ndarray of shape (n_components, n_features)
        Mean of each component, in the units of the input.

    covariances_ : ndarray
        Covariance of each component, shaped as in GaussianMixture.

    precisions_ : ndarray
        Inverses of the covariances.

    precisions_cholesky_ : ndarray
        Cholesky factors of the precisions.

    converged_ : bool
        True when training of the best initialization stopped on ``tol``.

    n_iter_ : int
        Training iterations of the best initialization.

    lower_bound_ : float
        Mean log-likelihood of the training pixels under the fitted mixture
        (``score`` of the training data), in the units of the input.

    lower_bounds_ : list of float
        The training log-likelihood at each iteration: per pixel, averaged
        over the training images, under the Gaussians of the loss (per image,
        as ``gaussians`` says).

    loss_curve_ : list of float
        The training loss at each iteration.

    network_ : torch.nn.Module
        The trained network, on the CPU.

    device_ : torch.device
        The device used for training.

    n_features_in_ : int
        Number of features (image channels).

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, for tabular input with string
        column names.

    See Also
    --------
    sklearn.mixture.GaussianMixture : The pixel-wise model fitted by EM.

    References
    ----------
    M. Schwab, A. Mayr and M. Haltmeier, "Deep Gaussian mixture model for
    unsupervised image segmentation", arXiv:2404.12252, 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from skdgmm import DeepGaussianMixture
    >>> rng = np.random.RandomState(0)
    >>> images = np.zeros((2, 32, 32))
    >>> images[:, 8:24, 8:24] = 1.0
    >>> images += 0.1 * rng.standard_normal(images.shape)
    >>> dgmm = DeepGaussianMixture(2, random_state=0, device="cpu")
    >>> labels = dgmm.fit_predict(images)
    >>> labels.shape
    (2, 32, 32)
    >>> np.round(np.sort(dgmm.means_.ravel()), 1) + 0.0
    array([0., 1.])
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({"full", "tied", "diag", "spherical"})],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [
            StrOptions({"kmeans", "random", "random_from_data", "k-means++"})
        ],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "spatially_variant": ["boolean"],
        "spatial_dims": [Interval(Integral, 2, 3, closed="both")],
        "network_width": [Interval(Integral, 1, None, closed="left")],
        "network_depth": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0.0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "patch_pixels": [Interval(Integral, 16, None, closed="left"), None],
        "init_iter": [Interval(Integral, 0, None, closed="left")],
        "mean_regularization": [Interval(Real, 0.0, None, closed="left")],
        "spatial_regularization": [Interval(Real, 0.0, None, closed="left")],
        "gaussians": [StrOptions({"bounded", "free", "fixed"})],
        "device": [str, torch.device],
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        spatially_variant=False,
        spatial_dims=2,
        network_width=8,
        network_depth=2,
        learning_rate=1e-2,
        batch_size=8,
        patch_pixels=65536,
        init_iter=20,
        mean_regularization=0.0,
        spatial_regularization=4.0,
        gaussians="bounded",
        device="auto",
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.spatially_variant = spatially_variant
        self.spatial_dims = spatial_dims
        self.network_width = network_width
        self.network_depth = network_depth
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.patch_pixels = patch_pixels
        self.init_iter = init_iter
        self.mean_regularization = mean_regularization
        self.spatial_regularization = spatial_regularization
        self.gaussians = gaussians
        self.device = device

    # -- input ---------------------------------------------------------------

    def _check_initial_parameters(self, n_features):
        for name, value, shape in [
            ("weights_init", self.weights_init, (self.n_components,)),
            ("means_init", self.means_init, (self.n_components, n_features)),
            (
                "precisions_init",
                self.precisions_init,
                _precision_shape(self.covariance_type, self.n_components, n_features),
            ),
        ]:
            if value is not None and np.shape(value) != shape:
                raise ValueError(
                    f"{name} should have the shape {shape} "
                    f"(n_components={self.n_components}, n_features={n_features}, "
                    f"covariance_type={self.covariance_type!r}); got {np.shape(value)}."
                )

    def _batches(self, X, mask, layout, device):
        # tabular problems are small and exactly GaussianMixture's: float64,
        # where the device has it
        double = layout.tabular and device.type != "mps"
        dtype = torch.float64 if double else torch.float32
        return ImageBatches(
            channels_first(X, layout),
            None if mask is None else mask_channels_first(mask, layout),
            self._scaling,
            batch_size=self.batch_size,
            device=device,
            dtype=dtype,
            patch_pixels=self.patch_pixels,
        )

    # -- training ------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, mask=None):
        """Train the network on the mixture likelihood of the pixels of X.

        The model is trained ``n_init`` times and the run with the lowest
        final loss is kept. Each run first fits the network to the
        responsibilities of an initial Gaussian mixture (``init_params``, then
        EM) for ``init_iter`` iterations, then minimises the negative
        log-likelihood for at most ``max_iter`` iterations or until
        it changes by less than ``tol``; otherwise a ``ConvergenceWarning`` is
        raised. With ``warm_start``, training continues from the fitted
        network. Interrupting (Ctrl-C) keeps the best model so far. Training
        whose log-likelihood ends more than 0.5 nats per pixel below where
        it started (and below the initial EM fit's) goes back to its last
        state within that margin (``verbose`` says so). The fitted Gaussians
        are then the M-step of the network's responsibilities; components
        that label no training pixel are named in a warning.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or image stack
            Tabular data, or images ``(n_images, *spatial[, n_channels])``
            with ``spatial_dims`` spatial axes.

        y : Ignored
            Not used, present for API consistency by convention.

        mask : array-like of bool, shape ``X.shape[:1 + spatial_dims]``, \
                default=None
            Pixels to model (True). The others never enter the Gaussians;
            those within 8 pixels of the mask's bounding box are seen by the
            network as context. Tabular data takes a mask of shape
            ``(n_samples,)``.

        Returns
        -------
        self : object
            The fitted mixture.
        """
        warm = self.warm_start and hasattr(self, "network_")
        if warm and self.n_components != len(self.means_):
            raise ValueError(
                f"warm_start continues the fitted model of {len(self.means_)} "
                f"components; n_components is now {self.n_components}."
            )
        # a warm start continues the fitted model: X must match it
        X, mask, layout = validate_input(self, X, mask, reset=not warm)
        n_pixels = count_pixels(X.shape, mask, layout)
        if n_pixels < max(2, self.n_components):
            raise ValueError(
                f"Expected n_samples >= n_components and at least 2 samples but "
                f"got n_components = {self.n_components}, n_samples = "
                f"{n_pixels} (pixels inside the mask)."
            )
        self._check_initial_parameters(self.n_features_in_)

        self.device_ = _resolve_device(self.device)
        random_state = check_random_state(self.random_state)
        # the scaling and the initial Gaussians need few pixels
        pixels = sample_pixels(X, mask, layout, _INITIAL_PIXELS, random_state)
        if not warm:
            self._scaling = Scaling.from_pixels(
                pixels.astype(np.float64), self.reg_covar
            )
        batches = self._batches(X, mask, layout, self.device_)

        best = None
        for init in range(1 if warm else self.n_init):
            self._print_verbose(2, f"Initialization {init}")
            # whether patches are cut can depend on the shuffled batches
            batches.patched = False
            generator = torch.Generator().manual_seed(
                int(random_state.randint(np.iinfo(np.int32).max))
            )
            if warm:
                network = copy.deepcopy(self.network_).to(self.device_)
                initial, pretraining = self._initial_gaussians, None
            else:
                try:
                    network, initial, pretraining = self._initialize(
                        pixels, layout, batches, random_state, generator
                    )
                except KeyboardInterrupt:
                    if best is None:
                        raise
                    warnings.warn(
                        "Training was interrupted; the estimator keeps the best "
                        "initialization so far.",
                        UserWarning,
                    )
                    break
            loss_fn = self._likelihood_loss(initial, batches)
            if pretraining is not None and pretraining.interrupted:
                history = History(interrupted=True)
            else:
                with tqdm(
                    total=self.max_iter,
                    desc=f"Initialization {init}",
                    unit="it",
                    disable=self.verbose != 1,
                ) as progress:
                    history = optimize(
                        network,
                        loss_fn,
                        batches,
                        learning_rate=self.learning_rate,
                        max_iter=self.max_iter,
                        tol=self.tol,
                        generator=generator,
                        on_iter=functools.partial(self._report_iter, progress),
                        reference_log_likelihood=self._initial_log_likelihood(
                            pixels, initial
                        ),
                    )
                if history.restored is not None:
                    self._print_verbose(
                        1,
                        f"The log-likelihood fell more than {GUARD_NATS} nats per "
                        f"pixel below where training started; keeping the network "
                        f"of iteration {history.restored}.",
                    )
            if isinstance(network, UNet) and batches.patched:
                # a warm start on whole images keeps what it was trained on
                network.trained_on_patches.fill_(True)
            loss, log_likelihood = self._evaluate(network, loss_fn, batches)
            self._print_verbose(
                2,
                f"Initialization {'converged' if history.converged else 'did not converge'}."
                f" lower bound {log_likelihood:.5f}.",
            )
            if best is None or loss < best[0]:
                best = (loss, log_likelihood, network.cpu(), history, initial)
            if history.interrupted:
                break

        _, _, self.network_, history, self._initial_gaussians = best
        # from the likelihood's units to the input's
        log_scale = self.n_features_in_ * np.log(self._scaling.scale)
        self.converged_ = history.converged
        self.n_iter_ = history.n_iter
        self.lower_bounds_ = [value - log_scale for value in history.log_likelihoods]
        self.loss_curve_ = history.losses
        self.lower_bound_ = self._set_gaussian_parameters(batches, n_pixels) - log_scale
        if not self.converged_ and self.max_iter > 0 and not history.interrupted:
            warnings.warn(
                "Best performing initialization did not converge. "
                "Try different init parameters, or increase max_iter, "
                "tol, or check for degenerate data.",
                ConvergenceWarning,
            )
        return self

    def _initialize(self, pixels, layout, batches, random_state, generator):
        """A new network trained towards the initial responsibilities.

        The initial mixture is a GaussianMixture fitted by EM from this
        estimator's ``init_params`` and ``*_init`` parameters, on the pixels in
        the likelihood's units. The network is fitted to its posteriors for
        ``init_iter`` iterations only: the smooth approximation a network
        learns first is its spatial prior.

        Returns the network, the initial Gaussians (weights, means and
        covariances, in the likelihood's units) and the history of this
        pre-training.
        """
        scaling = self._scaling
        scaled = (pixels - scaling.center) / scaling.scale
        means_init = self.means_init
        if means_init is not None:
            means_init = (np.asarray(means_init) - scaling.center) / scaling.scale
        precisions_init = self.precisions_init
        if precisions_init is not None:
            precisions_init = np.asarray(precisions_init) * scaling.scale**2
        with warnings.catch_warnings():
            # the network's training decides convergence, not this EM
            warnings.simplefilter("ignore", ConvergenceWarning)
            initial = GaussianMixture(
                self.n_components,
                covariance_type=self.covariance_type,
                tol=self.tol,
                reg_covar=self.reg_covar / scaling.scale**2,
                init_params=self.init_params,
                weights_init=self.weights_init,
                means_init=means_init,
                precisions_init=precisions_init,
                random_state=random_state,
            ).fit(scaled)
        network = build_network(
            batches.X.shape[1],
            self.n_components,
            kind="pixel" if layout.tabular else "unet",
            width=self.network_width,
            depth=unet_depth(batches.X.shape[2:], self.network_depth),
            spatial_dims=layout.network_dims,
            generator=generator,
        ).to(device=self.device_, dtype=batches.dtype)

        means = batches.tensor(initial.means_)[None]
        precisions_chol = batches.tensor(initial.precisions_cholesky_)[None]
        log_weights = batches.tensor(np.log(initial.weights_))

        def pretraining_loss(network, batch):
            log_prob = estimate_log_gaussian_prob(
                batch.pixels(batch.x_lik), means, precisions_chol, self.covariance_type
            )
            target = (log_prob + log_weights).log_softmax(-1)
            loss = batch.image_mean(
                soft_cross_entropy(network(batch.x_net), target, batch)
            )
            return loss, torch.nan

        history = optimize(
            network,
            pretraining_loss,
            batches,
            learning_rate=self.learning_rate,
            max_iter=self.init_iter,
            tol=0.0,
            generator=generator,
        )
        gaussians = (initial.weights_, initial.means_, initial.covariances_)
        return network, gaussians, history

    def _initial_log_likelihood(self, pixels, initial):
        """Mean log-likelihood of ``pixels`` (input units) under the initial
        EM fit, in the likelihood's units."""
        scaled = (pixels - self._scaling.center) / self._scaling.scale
        weights, means, covariances = (
            torch.as_tensor(p, dtype=torch.float64)[None] for p in initial
        )
        return float(
            mixture_log_likelihood(
                torch.as_tensor(scaled, dtype=torch.float64)[None],
                weights.log()[:, None],
                means,
                compute_precision_cholesky(covariances, self.covariance_type),
                self.covariance_type,
            ).mean()
        )

    def _likelihood_loss(self, initial, batches):
        """The training loss: the mixture's energy plus the Potts energy and
        the mean regularization (see :func:`mixture_energy`)."""

        initial = tuple(batches.tensor(p)[None] for p in initial)
        if self.means_init is None:
            mean_target = initial[1][0]
        else:
            scaling = self._scaling
            mean_target = batches.tensor(
                (self.means_init - scaling.center) / scaling.scale
            )
        # tabular samples have no neighbours
        smoothing = 0.0 if self._layout.tabular else self.spatial_regularization
        strength = self.mean_regularization

        def loss_fn(network, batch):
            logits = network(batch.x_net)
            energy, log_likelihood, means = mixture_energy(
                logits,
                batch,
                covariance_type=self.covariance_type,
                reg_covar=self.reg_covar / self._scaling.scale**2,
                spatially_variant=self.spatially_variant,
                # the M-step of a patch (region None) would estimate the
                # patch's Gaussians, not the image's
                gaussians=self.gaussians if batch.region is not None else "fixed",
                initial=initial,
            )
            loss = batch.image_mean(energy)
            if smoothing:
                loss = loss + smoothing * batch.image_mean(potts_energy(logits, batch))
            if strength:
                loss = (
                    loss
                    + strength * (batch.image_mean(means) - mean_target).square().sum()
                )
            return loss, batch.image_mean(log_likelihood).detach()

        return loss_fn

    @staticmethod
    def _evaluate(network, loss_fn, batches):
        """Mean loss and mean log-likelihood of the network over all images."""
        loss = log_likelihood = 0.0
        with torch.no_grad():
            for batch in batches.ordered():
                batch_loss, batch_ll = loss_fn(network, batch)
                loss += float(batch_loss) * len(batch)
                log_likelihood += float(batch_ll) * len(batch)
        return loss / len(batches), log_likelihood / len(batches)

    def _set_gaussian_parameters(self, batches, n_pixels):
        """Fitted Gaussians: the M-step of the final network's
        responsibilities over all ``n_pixels`` training pixels (at most
        ``_POOLED_PIXELS`` of them, evenly spaced, for large collections), so
        that ``weights_`` are the share of the pixels each component is
        responsible for and ``score`` is the likelihood of the model whose
        labels ``predict`` gives. Warns of components that label no pixel.
        Returns the mean log-likelihood of these pixels under the fitted
        mixture, in the likelihood's units.
        """
        scale = self._scaling.scale
        stride = -(-n_pixels // _POOLED_PIXELS)
        network = self.network_.to(self.device_)
        resp, pixels = [], []
        with torch.no_grad():
            for batch in batches.ordered():
                keep = batch.mask.flatten(1).bool()
                logits = network(batch.x_net)
                resp.append(batch.pixels(logits.softmax(1))[keep][::stride].cpu())
                pixels.append(batch.pixels(batch.x_lik)[keep][::stride].cpu())
        self.network_ = network.cpu()
        resp = torch.cat(resp).double()[None]
        pixels = torch.cat(pixels).double()[None]
        labelled = np.bincount(resp[0].argmax(-1).numpy(), minlength=self.n_components)
        reg_covar = self.reg_covar / scale**2
        _, means, covariances = estimate_gaussian_parameters(
            pixels, resp, reg_covar, self.covariance_type
        )
        # The softmax leaks a little responsibility onto components that
        # cannot explain a pixel, and a flat region's Gaussian (variance near
        # reg_covar) widens by orders of magnitude with it. One E-step with
        # the network's responsibilities as pixel-wise prior removes the leak
        # and leaves confident responsibilities as they are.
        log_resp = estimate_log_gaussian_prob(
            pixels,
            means,
            compute_precision_cholesky(covariances, self.covariance_type),
            self.covariance_type,
        ) + resp.log()
        nk, means, covariances = estimate_gaussian_parameters(
            pixels, log_resp.softmax(-1).nan_to_num(0.0), reg_covar, self.covariance_type
        )
        precisions_chol = compute_precision_cholesky(covariances, self.covariance_type)
        precisions = precisions_from_cholesky(precisions_chol, self.covariance_type)
        weights = nk / nk.sum()
        self.weights_ = weights.numpy()[0]
        self.means_ = means.numpy()[0] * scale + self._scaling.center
        self.covariances_ = covariances.numpy()[0] * scale**2
        self.precisions_cholesky_ = precisions_chol.numpy()[0] / scale
        self.precisions_ = precisions.numpy()[0] / scale**2
        log_weights = resp.log() if self.spatially_variant else weights.log()[:, None]
        log_likelihood = mixture_log_likelihood(
            pixels, log_weights, means, precisions_chol, self.covariance_type
        )
        if (labelled == 0).any():
            warnings.warn(
                f"Components {np.flatnonzero(labelled == 0).tolist()} of "
                f"{self.n_components} label no training pixel: the fitted model "
                "segments into fewer classes. Try fewer components, a smaller "
                "spatial_regularization, or another random_state.",
                UserWarning,
            )
        # in the likelihood's units
        return float(log_likelihood.mean())

    def _print_verbose(self, level, message):
        if self.verbose >= level:
            print(message)

    def _report_iter(self, progress, n_iter, loss, change):
        progress.update()
        progress.set_postfix(loss=f"{loss:.4f}", change=f"{change:.2g}", refresh=False)
        if n_iter % self.verbose_interval == 0:
            self._print_verbose(2, f"  Iteration {n_iter}\t loss change {change:.5f}")

    # -- inference -----------------------------------------------------------

    def _inference_device(self):
        """The device for inference: the requested one, or the CPU if it is
        missing here (a model trained on a GPU used on a machine without)."""
        try:
            device = _resolve_device(self.device)
        except ValueError:
            warnings.warn(
                f"Device {self.device!r} is not available here; using the CPU.",
                UserWarning,
            )
            device = torch.device("cpu")
        return device

    def _responsibilities(self, X, mask):
        """Validated X, mask, layout and the network's responsibilities."""
        check_is_fitted(self)
        X, mask, layout = validate_input(self, X, mask, reset=False)
        device = self._inference_device()
        batches = self._batches(X, mask, layout, device)
        network = self.network_
        if device.type != "cpu":
            network = copy.deepcopy(network).to(device=device, dtype=batches.dtype)
        # float32 for images: the largest array of inference
        resp = np.zeros(
            (len(batches), self.n_components) + batches.X.shape[2:],
            dtype=torch.empty(0, dtype=batches.dtype).numpy().dtype,
        )
        with torch.no_grad():
            for batch in batches.ordered():
                resp[(batch.index, slice(None), *batch.region)] = (
                    network(batch.x_net).softmax(1).cpu().numpy()
                )
        resp = channels_last(resp, layout)
        if mask is not None:
            resp[~mask] = 0.0
        return X, mask, resp

    def predict(self, X, *, mask=None):
        """Label every pixel with its most responsible component.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or image stack
            Data laid out as in ``fit``.

        mask : array-like of bool, default=None
            Pixels to label; the others get -1.

        Returns
        -------
        labels : ndarray of int
            Shape ``(n_samples,)`` for tabular data, ``X.shape[:1 +
            spatial_dims]`` for images.

        Notes
        -----
        Images are labelled one batch at a time, and an image of more than
        ``2**19`` pixels in overlapping tiles, so memory stays bounded. A
        collection too large for memory can be labelled block-wise with dask,
        each block holding whole images::

            stack = dask.array.from_zarr(...).rechunk((8, -1, -1))
            labels = stack.map_blocks(model.predict, dtype=int)
        """
        _, mask, resp = self._responsibilities(X, mask)
        labels = resp.argmax(-1)
        if mask is not None:
            labels[~mask] = -1
        return labels

    def fit_predict(self, X, y=None, *, mask=None):
        """Fit the model on X and label its pixels.

        Parameters
        ----------
        X, y, mask
            As in :meth:`fit`.

        Returns
        -------
        labels : ndarray of int
            As in :meth:`predict`.
        """
        return self.fit(X, mask=mask).predict(X, mask=mask)

    def predict_proba(self, X, *, mask=None):
        """Responsibility of each component for every pixel.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or image stack
            Data laid out as in ``fit``.

        mask : array-like of bool, default=None
            Pixels to evaluate; the others get probability 0.

        Returns
        -------
        resp : ndarray of shape ``labels.shape + (n_components,)``
        """
        return self._responsibilities(X, mask)[2].astype(np.float64, copy=False)

    def score_samples(self, X, *, mask=None):
        """Log-likelihood of every pixel under the fitted mixture.

        The components are ``means_`` and ``covariances_``; the mixing weights
        are ``weights_``, or the network's responsibilities when
        ``spatially_variant`` is True.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or image stack
            Data laid out as in ``fit``.

        mask : array-like of bool, default=None
            Pixels to evaluate; the others get 0.

        Returns
        -------
        log_likelihood : ndarray of float
            Same shape as the labels of :meth:`predict`.
        """
        if self.spatially_variant:
            X, mask, resp = self._responsibilities(X, mask)
            with np.errstate(divide="ignore"):
                log_mix = torch.as_tensor(np.log(resp)).reshape(-1, self.n_components)
        else:
            check_is_fitted(self)
            X, mask, _ = validate_input(self, X, mask, reset=False)
            log_mix = torch.as_tensor(np.log(self.weights_))
        # a writable copy of read-only input: torch warns on sharing it
        pixels = torch.as_tensor(np.require(X, np.float64, ["C", "W"]))
        pixels = pixels.reshape(1, -1, self.n_features_in_)
        scores = mixture_log_likelihood(
            pixels,
            log_mix,
            torch.as_tensor(self.means_)[None],
            torch.as_tensor(self.precisions_cholesky_)[None],
            self.covariance_type,
        )[0].numpy()
        scores = scores.reshape(self._layout.pixel_shape(X.shape))
        if mask is not None:
            scores[~mask] = 0.0
        return scores

    def score(self, X, y=None, *, mask=None):
        """Mean log-likelihood per pixel (inside the mask).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or image stack
            Data laid out as in ``fit``.

        y : Ignored
            Not used, present for API consistency by convention.

        mask : array-like of bool, default=None
            Pixels to average over.

        Returns
        -------
        log_likelihood : float
        """
        scores = self.score_samples(X, mask=mask)
        if mask is not None:
            scores = scores[np.asarray(mask, bool)]
        if scores.size == 0:
            raise ValueError(
                "The mask selects no pixels: the mean log-likelihood needs at "
                "least one."
            )
        return float(scores.mean())

    def _n_parameters(self):
        """Number of free parameters of the Gaussian mixture."""
        n_components, n_features = self.means_.shape
        cov_params = {
            "full": n_components * n_features * (n_features + 1) / 2.0,
            "diag": n_components * n_features,
            "tied": n_features * (n_features + 1) / 2.0,
            "spherical": n_components,
        }[self.covariance_type]
        return int(cov_params + n_components * n_features + n_components - 1)

    def _n_pixels(self, X, mask):
        X, mask, layout = validate_input(self, X, mask, reset=False)
        return count_pixels(X.shape, mask, layout)

    def bic(self, X, *, mask=None):
        """Bayesian information criterion, counting pixels as samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or image stack
        mask : array-like of bool, default=None

        Returns
        -------
        bic : float
            The lower the better.
        """
        n = self._n_pixels(X, mask)
        return -2 * self.score(X, mask=mask) * n + self._n_parameters() * np.log(n)

    def aic(self, X, *, mask=None):
        """Akaike information criterion, counting pixels as samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or image stack
        mask : array-like of bool, default=None

        Returns
        -------
        aic : float
            The lower the better.
        """
        n = self._n_pixels(X, mask)
        return -2 * self.score(X, mask=mask) * n + 2 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draw pixels from the fitted Gaussian mixture.

        Parameters
        ----------
        n_samples : int, default=1

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            Component labels.
        """
        check_is_fitted(self)
        mixture = GaussianMixture(
            self.n_components,
            covariance_type=self.covariance_type,
            random_state=self.random_state,
        )
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            setattr(mixture, name, getattr(self, name))
        return mixture.sample(n_samples)
