"""Deep Gaussian mixture model (Schwab, Mayr & Haltmeier, arXiv 2404.12252)."""

import copy
import dataclasses
import functools
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._adaptation import adapt_responsibilities
from ._base import MIXTURE_CONSTRAINTS, inference_device, resolve_device
from ._data import (
    Scaling,
    collection_rescaling,
    image_batches,
    intensity_maps,
    network_labels,
    network_responsibilities,
    pixel_log_likelihood,
    training_sample,
)
from ._fitting import (
    INITS,
    Run,
    Settings,
    fitted_attributes,
    train,
    warn_if_emptied,
    warn_if_not_converged,
)
from ._gaussian import n_parameters
from ._layout import (
    channels_last,
    check_input,
    count_pixels,
    pixels_last,
    set_input_attributes,
    validate_input,
)
from ._namespace import like, namespace_of, to_numpy
from ._runtime import RUNTIMES, export_model, inference_network
from .priors import check_labels, labelled_mixture

# Pixels drawn for the input's scaling and the initial EM fit.
_INITIAL_PIXELS = 100_000

# The fitted Gaussians: NumPy arrays, or under scikit-learn's
# array_api_dispatch in the namespace and on the device of X.
_GAUSSIANS = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_cholesky_",
    "precisions_",
)


def _in_dtype(mixture, dtype):
    """The arrays of a fitted mixture in ``dtype``: float32 input gives
    float32 Gaussians, as GaussianMixture's."""
    arrays = ("weights", "means", "covariances", "precisions_cholesky", "precisions")
    return dataclasses.replace(
        mixture, **{name: getattr(mixture, name).astype(dtype) for name in arrays}
    )


def _batches(model, X, mask, layout, scaling, device, maps, labels=None):
    """The images as :class:`~skdgmm._data.ImageBatches` for ``model``."""
    return image_batches(
        X,
        mask,
        layout,
        scaling,
        batch_size=model.batch_size,
        device=device,
        patch_pixels=model.patch_pixels,
        rescaling=maps,
        labels=labels,
    )


def _adapts(model, method):
    """Whether ``model`` adapts its inference to each image by ``method``
    (``adapt_method``): images only, where a tabular row's label would
    otherwise depend on the other rows of the call."""
    return bool(
        model.adapt_iter and model.adapt_method == method and not model._layout.tabular
    )


def _adaptation(model):
    """How ``model`` adapts each batch's responsibilities at inference
    with EM (``adapt_iter``), or None."""
    if not _adapts(model, "em"):
        return None
    return functools.partial(
        adapt_responsibilities,
        n_iter=model.adapt_iter,
        reg_covar=model._scaling.variance(model.reg_covar),
        covariance_type=model._fitted_covariance_type,
    )


def _on_device(network, device, dtype):
    """``network`` to run on ``device`` in ``dtype``: a copy there, so that
    a fitted network stays on the CPU."""
    if device.type == "cpu":
        return network
    return copy.deepcopy(network).to(device=device, dtype=dtype)


def _fine_tuned(model, X, mask, layout, device, maps):
    """For each image of X (mapped by ``maps``): its batches, and a copy of
    ``model``'s network trained ``adapt_iter`` more iterations on it as a
    warm start trains (the fitted network, where that lowered the image's
    likelihood; where the image has no pixel in the mask, the fitted
    network). The model is unchanged."""
    _check_warm_start(model, by="adapt_method='network'")
    settings = Settings.from_params(
        {**model.get_params(), "max_iter": model.adapt_iter, "verbose": 0}
    )
    fitted = Run(model.network_, model._history, model._initial_gaussians)
    for index in range(len(X)):
        image = slice(index, index + 1)
        X_i, mask_i = X[image], None if mask is None else mask[image]
        maps_i = None if maps is None else tuple(m[image] for m in maps)
        batches = _batches(model, X_i, mask_i, layout, model._scaling, device, maps_i)
        n_pixels = count_pixels(X_i.shape, mask_i, layout)
        if not n_pixels:
            yield batches, _on_device(model.network_, device, batches.dtype)
            continue
        # an image's labels do not depend on the other images of the call,
        # nor on the calls before (a RandomState of the model stays as it is)
        random_state = check_random_state(copy.deepcopy(model.random_state))
        pixels = training_sample(
            X_i, mask_i, layout, _INITIAL_PIXELS, random_state, maps_i
        )
        run, _ = train(
            batches,
            pixels,
            n_pixels,
            layout,
            model._scaling,
            settings,
            random_state,
            device,
            warm=fitted,
        )
        if run.history.interrupted:
            # Ctrl-C stops the labelling, as it would a forward pass
            raise KeyboardInterrupt
        yield batches, _on_device(run.network, device, batches.dtype)


def _rescaling(model, X, mask, layout, warm):
    """The intensity rescaling of a fit of ``model`` and the maps of the
    images of X: a warm start keeps the fitted one. "auto" leaves alone the
    images of a fit whose initial mixture the user gave (``*_init``, in
    the input's units)."""
    if warm:
        rescaling = getattr(model, "_intensity_rescaling", None)
        return rescaling, intensity_maps(rescaling, X, mask, layout)
    mode = model.rescale_intensity
    if mode == "auto" and any(getattr(model, name) is not None for name in INITS):
        mode = False
    return collection_rescaling(X, mask, layout, mode)


def _starting_point(model, X, mask, layout, warm, random_state, maps):
    """What a fit of ``model`` on the images of X (mapped by ``maps``)
    starts from: a sample of the pixels (for the scaling and the initial
    EM), the scaling, and with ``warm`` the fitted :class:`Run` that
    training continues (else None)."""
    # training goes on as if it had not stopped (see History)
    run = (
        Run(model.network_, model._history, model._initial_gaussians) if warm else None
    )
    # the scaling and the initial Gaussians need few pixels
    pixels = training_sample(X, mask, layout, _INITIAL_PIXELS, random_state, maps)
    scaling = (
        model._scaling
        if warm
        else Scaling.from_pixels(pixels.astype(np.float64), model.reg_covar)
    )
    return pixels, scaling, run


def _with_labels(model, X, mask, layout, labels, settings, maps):
    """Validated partial ``labels`` (-1 outside the mask) and ``settings``
    whose initial mixture, where no ``*_init`` is given, is the M-step of
    the labelled pixels (mapped by ``maps``, as the network sees them)."""
    shape = layout.pixel_shape(X.shape)
    labels = check_labels(labels, shape, settings.n_components, mask=mask)
    if all(getattr(settings, name) is None for name in INITS):
        init = labelled_mixture(
            X,
            labels,
            layout,
            settings.n_components,
            settings.covariance_type,
            settings.reg_covar,
            maps,
        )
        settings = dataclasses.replace(settings, **init)
    return labels, settings


def _gaussian_mixture(model):
    """The fitted Gaussians of ``model`` as a fitted GaussianMixture."""
    mixture = GaussianMixture(
        model.n_components,
        covariance_type=model.covariance_type,
        random_state=model.random_state,
    )
    for name in _GAUSSIANS:
        setattr(mixture, name, to_numpy(getattr(model, name)))
    return mixture


def _score_samples(model, X, mask):
    """What ``model.score_samples(X, mask=mask)`` returns, as a NumPy array,
    and the mask as NumPy reads it (None without one)."""
    check_is_fitted(model)
    weights, means, precisions_cholesky = (
        to_numpy(getattr(model, name))
        for name in ("weights_", "means_", "precisions_cholesky_")
    )
    if model.spatially_variant:
        # the network's weights: adapted ones count the image twice
        X, mask, resp = model._responsibilities(X, mask, adapt=False)
        with np.errstate(divide="ignore"):
            log_weights = np.log(resp, dtype=np.float64)
    else:
        X, mask, _ = validate_input(model, X, mask, reset=False)
        log_weights = np.log(weights, dtype=np.float64)
    # computed in float64, returned in the dtype of X and the fit (as
    # GaussianMixture's)
    scores = pixel_log_likelihood(
        X,
        model._layout,
        log_weights,
        (means, precisions_cholesky, model.covariance_type),
        intensity_maps(
            getattr(model, "_intensity_rescaling", None), X, mask, model._layout
        ),
    ).astype(np.result_type(X.dtype, means.dtype), copy=False)
    if mask is not None:
        scores[~mask] = 0.0
    return scores, mask


def _check_deployable(model):
    """A ValueError if ``model``'s inference is not one network's pass."""
    if model._layout.tabular:
        raise ValueError(
            "to_onnx exports models fitted on images; this one was fitted on "
            "tabular data."
        )
    if getattr(model, "_intensity_rescaling", None) is not None:
        raise ValueError(
            "to_onnx does not export the per-image intensity rescaling of "
            "rescale_intensity; fit with rescale_intensity=False to deploy "
            "the model outside Python."
        )


def _check_warm_start(model, by="warm_start"):
    """A ValueError if ``model``'s parameters changed what a warm start (or
    what ``by`` names: another training that continues the fit) continues."""
    rescaled = getattr(model, "_intensity_rescaling", None) is not None
    for name, now, fitted in [
        ("n_components", model.n_components, len(model.weights_)),
        ("covariance_type", model.covariance_type, model._fitted_covariance_type),
        (
            "rescale_intensity",
            # no effect on tabular data; "auto" continues what it chose
            rescaled
            if model.rescale_intensity == "auto"
            else model.rescale_intensity and not model._layout.tabular,
            rescaled,
        ),
    ]:
        if now != fitted:
            remedy = (
                "Set warm_start=False to fit a new model."
                if by == "warm_start"
                else f"Set {name} back to {fitted!r}, or adapt_method='em'."
            )
            raise ValueError(
                f"{by} continues the fitted model, whose {name} is "
                f"{fitted!r}; {name} is now {now!r}. {remedy}"
            )


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
        Training stops when the loss (per pixel) decreases by less than
        ``tol`` per iteration, averaged over the last five iterations
        (gradient steps make single changes noisy): a loss that no longer
        falls ends training, as EM ends when its gain falls below ``tol``.

    reg_covar : float, default=1e-6
        Non-negative regularization added to the diagonal of covariances, in
        the units of the input.

    max_iter : int, default=200
        Maximum number of training iterations (passes over the training set).
        Most fits converge within 100; an unmasked 256x256 slice can take
        about 120.

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

    channel_axis : "auto", None or int, default="auto"
        The axis of image stacks that holds the channels, as scikit-image's
        ``channel_axis``: None for no channel axis ``(n, *spatial)``, -1 for
        the last ``(n, *spatial, C)``, 1 for PyTorch's ``(n, C, *spatial)``.
        "auto" reads channels on the last axis when X has ``spatial_dims +
        2`` axes, and warns where that reading looks wrong (more channels
        than pixels along an image axis, or more than 16; a last image axis
        as short as colour channels; a 2-D array about as wide as it is
        long); passing the axis silences the warning. Outputs are channels
        last whatever it is. A 2-D array is always tabular data
        ``(n_samples, n_features)``: a single image is a stack of one,
        ``X[None]``.

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

    init_iter : int or "auto", default="auto"
        Iterations fitting the network to the responsibilities of the initial
        Gaussian mixture (fitted by EM, started as ``init_params`` says)
        before the likelihood is optimized. Few iterations leave the network
        with the smooth approximation it learns first: its spatial prior.
        "auto" is 20, or 4 for a fit with ``labels`` (their cross-entropy
        names the classes from the first training step: as good on the
        benchmark collections with 3 labelled slices, in about half the
        time; ``docs/quality.md``).
        Beside a flat region (padding, an empty background: a component of
        the initial mixture with almost no variance), pre-training goes on
        until the network's responsibilities are within 0.05 nats per pixel
        (Kullback-Leibler divergence) of the mixture's posteriors, for at most
        ``5 * init_iter`` iterations (100 with "auto"): from softer ones a
        small class is dragged into the flat region and empties. Where
        training empties a component (leaves it less than a fifth of the
        pixels the pre-trained network labelled with it), the fit is trained
        once more from a network pre-trained that close or, where it already
        was, with the Gaussians held at the initial EM's (``verbose=1`` says
        so). Without ``labels``, training starts with a linear warm-up of
        the learning rate over its first 20 steps: Adam's first steps at the
        full rate can throw the pre-trained network out of where
        pre-training brought it.

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

    rescale_intensity : "auto" or bool, default="auto"
        If True, each image of a stack is mapped ``x -> a x + b`` (per
        channel) so that its 0.5 and 99.5 percentiles inside the mask land
        on those of a typical training image (the median over the training
        images), before the network and the likelihood see it: images of
        one study that differ in brightness and contrast then share one set
        of Gaussians, and a new image is mapped by its own percentiles
        (:meth:`predict` adapts to it). The fitted Gaussians are in the
        units of the typical training image, and so are the initial mixture
        of ``labels=`` and any ``*_init`` given; ``score_samples`` is the
        density of the input's values (the change of variables counted).
        "auto" rescales a stack whose images' ranges differ: the
        interquartile range over the images of the log of their widths, or
        of their centres in typical widths, above 0.3 (slices of different
        patients or scanners, as in EMIDEC, where it lifted the collection's
        Dice by 0.085; not the slices of one volume, whose collection lost
        0.024 rescaled), unless ``*_init`` are given (in the input's units).
        No effect on tabular data.

    device : str or torch.device, default="auto"
        Where to train: "auto" picks CUDA, then MPS, then the CPU.

    runtime : {"auto", "torch", "onnxruntime"}, default="auto"
        What runs the U-Net at inference on the CPU (``predict``,
        ``predict_proba``, ``score_samples``): ONNX Runtime, up to 1.6 times
        faster there (``pip install "skdgmm[onnx]"``; the network is
        exported once per fitted model, in about 0.1 s, and again where its
        weights have changed), or torch. "auto"
        uses ONNX Runtime where it is installed; "onnxruntime" raises an
        ImportError where it is not. Both compute the same function (logits
        within about 1e-5 of each other); training, GPUs and tabular data
        always use torch.

    adapt_iter : int, default=0
        Iterations that adapt ``predict`` and ``predict_proba`` to each
        image, by ``adapt_method``; 0 labels by the network alone. The
        fitted model never changes; ``score`` and ``score_samples`` stay the
        fitted model's. Images only (tabular data is labelled row by row);
        each image is adapted whole, alone.

    adapt_method : {"em", "network"}, default="em"
        What an adaptation iteration is.

        - "em": an EM iteration on the image's pixels, in float64. The
          E-step weighs the image's own Gaussians (the M-step of its
          current responsibilities) by their share of the image and by the
          network's responsibilities to the power 1/4, as a pixel-wise
          prior. It helps where new images differ from the training images
          (amortized Dice on patients not trained on, 10 iterations:
          +0.008 to +0.037 on the four benchmark sets, see
          ``docs/quality.md``) at the cost of a few M-steps per image.
        - "network": a training iteration of a copy of the network on the
          image, continuing the fit as ``warm_start`` does (its learning
          rate, Gaussians and optimizer state); the image is then labelled
          by the copy, with torch. Ten iterations reached the quality of a
          fit per image on three of the four benchmark sets in a fifth of
          its time (``docs/quality.md``), but cost as much as ten training
          steps per image: seconds, not milliseconds.

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
        Training iterations of the best initialization (of its second
        training, where one emptied a component; see ``init_iter``).

    lower_bound_ : float
        Mean log-likelihood of the training pixels under the fitted mixture
        (``score`` of the training data), in the units of the input (with
        ``rescale_intensity``, of the typical training image: the change of
        variables of each image is not counted).

    lower_bounds_ : list of float
        The training log-likelihood at each iteration: per pixel, averaged
        over the training images, under the Gaussians of the loss (per image,
        as ``gaussians`` says), in the units of the input. With
        ``warm_start``, the iterations of earlier fits come first.

    loss_curve_ : list of float
        The training loss at each iteration, per pixel and averaged over the
        training images as ``lower_bounds_``, in the same units: the
        mixture's energy (whose minimum over the responsibilities is
        ``-lower_bounds_``; with ``spatially_variant`` it is
        ``-lower_bounds_``) plus the Potts and mean regularisation terms.
        Earlier fits first, as in ``lower_bounds_``.

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
        **MIXTURE_CONSTRAINTS,
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [
            StrOptions({"kmeans", "random", "random_from_data", "k-means++"})
        ],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "spatially_variant": ["boolean"],
        "network_width": [Interval(Integral, 1, None, closed="left")],
        "network_depth": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0.0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "patch_pixels": [Interval(Integral, 16, None, closed="left"), None],
        "init_iter": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "mean_regularization": [Interval(Real, 0.0, None, closed="left")],
        "spatial_regularization": [Interval(Real, 0.0, None, closed="left")],
        "gaussians": [StrOptions({"bounded", "free", "fixed"})],
        "rescale_intensity": ["boolean", StrOptions({"auto"})],
        "device": [str, torch.device],
        "runtime": [StrOptions(set(RUNTIMES))],
        "adapt_iter": [Interval(Integral, 0, None, closed="left")],
        "adapt_method": [StrOptions({"em", "network"})],
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=200,
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
        channel_axis="auto",
        network_width=8,
        network_depth=2,
        learning_rate=1e-2,
        batch_size=8,
        patch_pixels=65536,
        init_iter="auto",
        mean_regularization=0.0,
        spatial_regularization=4.0,
        gaussians="bounded",
        rescale_intensity="auto",
        device="auto",
        runtime="auto",
        adapt_iter=0,
        adapt_method="em",
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
        self.channel_axis = channel_axis
        self.network_width = network_width
        self.network_depth = network_depth
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.patch_pixels = patch_pixels
        self.init_iter = init_iter
        self.mean_regularization = mean_regularization
        self.spatial_regularization = spatial_regularization
        self.gaussians = gaussians
        self.rescale_intensity = rescale_intensity
        self.device = device
        self.runtime = runtime
        self.adapt_iter = adapt_iter
        self.adapt_method = adapt_method

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, mask=None, labels=None):
        """Train the network on the mixture likelihood of the pixels of X.

        The model is trained ``n_init`` times and the run whose fitted Gaussians
        give the training pixels the highest likelihood (``lower_bound_``) is
        kept, as in GaussianMixture. Each run first fits the network to the
        responsibilities of an initial Gaussian mixture (``init_params``, then
        EM) for ``init_iter`` iterations, then minimises the negative
        log-likelihood for at most ``max_iter`` iterations or until it no
        longer decreases by ``tol`` per iteration (see ``tol``); otherwise a
        ``ConvergenceWarning`` is raised. With
        ``warm_start``, training continues from the fitted network. Interrupting
        (Ctrl-C) keeps the best model so far. Training whose log-likelihood ends
        more than 0.5 nats per pixel below where it started (and below the
        initial EM fit's) goes back to its last state within that margin
        (``verbose`` says so). The fitted Gaussians are then the M-step of the
        network's responsibilities; components that label no training pixel are
        named in a warning.

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

        labels : array-like of int, shape of the mask, default=None
            Partial labels (scikit-learn's semi-supervised convention): the
            class ``0 .. n_components - 1`` of each labelled pixel, -1 for
            the others (and ignored outside the mask); every class needs a
            labelled pixel. Class k of the labels is then component k of
            the fit: the initial mixture is the M-step of the labelled
            pixels (unless ``*_init`` parameters are given), and training
            adds the cross-entropy of the network's responsibilities to the
            labels, the labelled pixels weighing as much in the loss as all
            pixels together (each at least as much as ten unlabelled ones).
            A few labelled images name the classes of a whole collection.

        Returns
        -------
        self : object
            The fitted mixture.
        """
        in_namespace = namespace_of(X)
        warm = self.warm_start and hasattr(self, "network_")
        if warm:
            _check_warm_start(self)
        # a warm start continues the fitted model: X must match it
        X, mask, layout, attributes = check_input(self, X, mask, reset=not warm)
        n_pixels = count_pixels(X.shape, mask, layout)
        settings = Settings.from_params(self.get_params())
        rescaling, maps = _rescaling(self, X, mask, layout, warm)
        if labels is not None:
            labels, settings = _with_labels(
                self, X, mask, layout, labels, settings, maps
            )
        settings.check_sizes(
            n_pixels,
            attributes.get("n_features_in_", getattr(self, "n_features_in_", 0)),
        )

        device = resolve_device(self.device)
        random_state = check_random_state(self.random_state)
        pixels, scaling, warm = _starting_point(
            self, X, mask, layout, warm, random_state, maps
        )
        batches = _batches(self, X, mask, layout, scaling, device, maps, labels)
        run, mixture = train(
            batches,
            pixels,
            n_pixels,
            layout,
            scaling,
            settings,
            random_state,
            device,
            warm,
        )
        mixture = _in_dtype(mixture, X.dtype)

        # The fitted model changes in this one step: a fit that fails or is
        # interrupted before it leaves the previous one exactly as it was.
        fitted = fitted_attributes(run, mixture, scaling, rescaling)
        if in_namespace is not None:
            fitted.update({name: in_namespace(fitted[name]) for name in _GAUSSIANS})
        set_input_attributes(self, attributes)
        vars(self).update(
            fitted,
            _fitted_covariance_type=self.covariance_type,
            # a warm start on masked data scores inside masks from then on
            _fitted_with_mask=mask is not None
            or bool(warm and getattr(self, "_fitted_with_mask", False)),
            device_=device,
        )
        warn_if_emptied(mixture, settings)
        warn_if_not_converged(run.history, settings)
        return self

    def _inference(self, X, mask, adapt=True):
        """Validated X, mask and layout, and the parts of X that one network
        labels: pairs of batches and their network (on the inference
        device), the whole stack at once, or with ``adapt`` and
        ``adapt_method="network"`` one image at a time."""
        check_is_fitted(self)
        X, mask, layout = validate_input(self, X, mask, reset=False)
        device = inference_device(self.device)
        maps = intensity_maps(
            getattr(self, "_intensity_rescaling", None), X, mask, layout
        )
        if adapt and _adapts(self, "network"):
            # fine-tuned copies run in torch: an export would cost more
            return X, mask, layout, _fine_tuned(self, X, mask, layout, device, maps)
        batches = _batches(self, X, mask, layout, self._scaling, device, maps)
        network = _on_device(self.network_, device, batches.dtype)
        network = inference_network(network, self.runtime, device, batches.dtype)
        return X, mask, layout, [(batches, network)]

    def _responsibilities(self, X, mask, adapt=True):
        """Validated X, mask and the network's responsibilities (adapted to
        each image with ``adapt_iter``, if ``adapt``)."""
        X, mask, layout, parts = self._inference(X, mask, adapt)
        em = _adaptation(self) if adapt else None
        resp = np.concatenate(
            [
                network_responsibilities(network, batches, len(self.weights_), em)
                for batches, network in parts
            ]
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
        _, mask, layout, parts = self._inference(X, mask)
        em = _adaptation(self)
        if em is None:
            labels = np.concatenate(
                [network_labels(network, batches) for batches, network in parts]
            )
        else:
            # outside the crops (outside the mask) labelled -1 below
            ((batches, network),) = parts
            resp = network_responsibilities(network, batches, len(self.weights_), em)
            labels = resp.argmax(1)
        labels = pixels_last(labels, layout)
        if mask is not None:
            labels[~mask] = -1
        return like(X, labels)

    def fit_predict(self, X, y=None, *, mask=None, labels=None):
        """Fit the model on X and label its pixels.

        Parameters
        ----------
        X, y, mask, labels
            As in :meth:`fit`.

        Returns
        -------
        labels : ndarray of int
            As in :meth:`predict`.
        """
        return self.fit(X, mask=mask, labels=labels).predict(X, mask=mask)

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
        resp = self._responsibilities(X, mask)[2]
        return like(X, resp.astype(np.float64, copy=False))

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
        return like(X, _score_samples(self, X, mask)[0])

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
        scores, mask = _score_samples(self, X, mask)
        if mask is not None:
            scores = scores[mask]
        if scores.size == 0:
            raise ValueError(
                "The mask selects no pixels: the mean log-likelihood needs at "
                "least one."
            )
        return float(scores.mean())

    def _information_criterion(self, X, mask, penalty):
        """``-2 log L + penalty(n_pixels) * n_parameters``."""
        X, mask, layout = validate_input(self, X, mask, reset=False)
        n = count_pixels(X.shape, mask, layout)
        return float(
            -2 * self.score(X, mask=mask) * n + penalty(n) * self._n_parameters()
        )

    def _n_parameters(self):
        """Number of free parameters of the Gaussian mixture (as sklearn's)."""
        return n_parameters(self.covariance_type, *self.means_.shape)

    def bic(self, X, *, mask=None):
        """Bayesian information criterion, counting pixels as samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or image stack
        mask : array-like of bool, default=None

        Returns
        -------
        bic : float
            ``-2 log L + log(n_pixels) * n_parameters``, with L the
            likelihood of the pixels inside the mask; the lower the better.
        """
        return self._information_criterion(X, mask, np.log)

    def aic(self, X, *, mask=None):
        """Akaike information criterion: :meth:`bic` with 2 per parameter.

        Parameters
        ----------
        X, mask
            As in :meth:`bic`.

        Returns
        -------
        aic : float
            ``-2 log L + 2 * n_parameters``; the lower the better.
        """
        return self._information_criterion(X, mask, lambda n: 2)

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
        X, y = _gaussian_mixture(self).sample(n_samples)
        return like(self.means_, X), like(self.means_, y)

    def to_onnx(self, path):
        """Write the fitted network's inference as an ONNX model, for
        deployment outside Python (ONNX Runtime, OpenVINO, TensorRT...).

        The graph takes ``x``, float32 images ``(N, C, *spatial)`` in the
        units of the training images with the channels first (ONNX's
        layout; ``np.moveaxis(images, -1, 1)`` from this estimator's), of
        any batch and spatial sizes, each spatial size at least
        ``2 ** (network depth + 1)``. It returns ``probabilities`` ``(N, K,
        *spatial)`` and ``labels`` ``(N, *spatial)`` (int64): what
        :meth:`predict_proba` and :meth:`predict` give for images of up to
        ``2**19`` pixels without ``adapt_iter`` (larger ones go in tiles
        there). For a model fitted with a mask, pass the box around each
        image's mask widened by 8 pixels, as :meth:`predict` does. Needs the
        ``onnx`` extra (``pip install "skdgmm[onnx]"``).

        Parameters
        ----------
        path : str or path-like
            Where to write the model (``.onnx``).

        Returns
        -------
        path : str or path-like
            ``path``.

        Raises
        ------
        ValueError
            If the model was fitted on tabular data or with
            ``rescale_intensity`` (a per-image map the graph does not hold).

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np, onnxruntime
        >>> from skdgmm import DeepGaussianMixture
        >>> from skdgmm.datasets import make_segmentation_images
        >>> images, _ = make_segmentation_images(2, (32, 32), random_state=0)
        >>> model = DeepGaussianMixture(3, max_iter=5, random_state=0,
        ...                             device="cpu").fit(images)
        >>> path = model.to_onnx(os.path.join(tempfile.mkdtemp(), "model.onnx"))
        >>> session = onnxruntime.InferenceSession(path)
        >>> x = images[:, np.newaxis].astype(np.float32)  # (N, C, H, W)
        >>> probabilities, labels = session.run(None, {"x": x})
        >>> bool((labels == model.predict(images)).all())
        True
        """
        check_is_fitted(self)
        _check_deployable(self)
        export_model(self.network_, self._scaling, path, len(self.weights_))
        return path
