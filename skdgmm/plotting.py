"""Pictures of segmentations: label overlays, probability maps, training curves.

The ``plot_*`` functions need matplotlib, the ``plot`` extra:
``pip install "skdgmm[plot]"``; :func:`overlay_rgb` needs only scikit-image.
"""

import numpy as np
from scipy.stats import entropy
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted


def _pyplot():
    """matplotlib.pyplot, imported on first use so that skdgmm does not need it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            'skdgmm.plotting needs matplotlib: pip install "skdgmm[plot]"'
        ) from error
    return plt


def _grey_image(image):
    """A 2-D image (its first channel if it has several), scaled to [0, 1]."""
    from skimage.exposure import rescale_intensity

    image = np.asarray(image, dtype=float)
    if image.ndim == 3:
        image = image[..., 0]
    if image.ndim != 2:
        raise ValueError(
            f"Expected one 2-D image (height, width) or (height, width, "
            f"n_channels), got an array of shape {image.shape}; pass one "
            f"image of a stack, or one slice of a volume."
        )
    return rescale_intensity(image, out_range=(0.0, 1.0))


def _check_one_image(image, labels):
    """A ValueError, naming the shapes, if ``image`` and ``labels`` are a
    stack (or a volume) rather than one 2-D image and its label map."""
    stack = labels.ndim > 2 or (
        image.ndim == 3
        and labels.ndim == 2
        and image.shape[:2] != labels.shape
        and image.shape[1:] == labels.shape
    )
    if stack:
        raise ValueError(
            f"Expected one 2-D image (height, width) or (height, width, "
            f"n_channels) and its labels (height, width); got an image of "
            f"shape {image.shape} and labels of shape {labels.shape}, a stack. "
            f"Pass one image of the stack and its labels, e.g. images[0] and "
            f"labels[0] (or one slice of a volume)."
        )


def overlay_rgb(image, labels, *, mask=None, alpha=0.3, boundaries=False):
    """The RGB picture of a label map over an image, as an array.

    What :func:`plot_overlay` draws, without matplotlib (only scikit-image):
    component labels coloured over the grey image (the first channel of a
    multichannel image, scaled to [0, 1]) with :func:`skimage.color.label2rgb`,
    or outlined with :func:`skimage.segmentation.mark_boundaries`. Label -1
    (pixels outside the mask, as the estimators return them) is left
    uncoloured. Save it with e.g. ``skimage.io.imsave(path, (rgb * 255)
    .round().astype(np.uint8))``.

    Parameters
    ----------
    image : array-like of shape (height, width) or (height, width, n_channels)
        One image of a stack, or one slice of a volume.

    labels : array-like of int of shape (height, width)
        A label map, e.g. ``model.predict(images)[i]``.

    mask : array-like of bool of shape (height, width), default=None
        Only the labels inside the mask are coloured.

    alpha : float, default=0.3
        Opacity of the label colours.

    boundaries : bool, default=False
        Outline the regions instead of filling them.

    Returns
    -------
    rgb : ndarray of float of shape (height, width, 3)
        The picture, values in [0, 1].

    See Also
    --------
    plot_overlay : Show the same picture in matplotlib axes.

    Examples
    --------
    >>> from skdgmm.datasets import make_segmentation_images
    >>> from skdgmm.plotting import overlay_rgb
    >>> images, labels = make_segmentation_images(1, (32, 32), random_state=0)
    >>> rgb = overlay_rgb(images[0], labels[0], alpha=0.5)
    >>> rgb.shape, bool(rgb.min() >= 0 and rgb.max() <= 1)
    ((32, 32, 3), True)
    """
    from skimage.color import label2rgb
    from skimage.segmentation import mark_boundaries

    image, labels = np.asarray(image), np.asarray(labels)
    _check_one_image(image, labels)
    grey = _grey_image(image)
    if labels.shape != grey.shape:
        raise ValueError(
            f"labels must have the shape of the image, {grey.shape}; got "
            f"{labels.shape}."
        )
    if mask is not None:
        labels = np.where(np.asarray(mask, dtype=bool), labels, -1)
    if boundaries:
        # mark_boundaries draws every change of label, the edge of the
        # unlabelled region included
        return mark_boundaries(grey, labels, color=(1.0, 0.5, 0.0))
    return label2rgb(labels, image=grey, bg_label=-1, alpha=alpha, image_alpha=1.0)


def plot_overlay(
    image, labels, *, mask=None, ax=None, alpha=0.3, boundaries=False, title=None
):
    """Show a label map over an image.

    Component labels are coloured over the grey image (the first channel of
    a multichannel image) with :func:`skimage.color.label2rgb`, or outlined
    with :func:`skimage.segmentation.mark_boundaries`. Label -1 (pixels
    outside the mask, as the estimators return them) is left uncoloured.
    The picture is :func:`overlay_rgb`'s.

    Parameters
    ----------
    image, labels, mask, alpha, boundaries
        As in :func:`overlay_rgb`.

    ax : matplotlib Axes, default=None
        Where to draw; a new figure if None.

    title : str, default=None
        Title of the axes.

    Returns
    -------
    ax : matplotlib Axes
        The axes drawn on.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skdgmm.datasets import make_segmentation_images
    >>> from skdgmm.plotting import plot_overlay
    >>> images, labels = make_segmentation_images(1, (32, 32), random_state=0)
    >>> ax = plot_overlay(images[0], labels[0], title="ground truth")
    >>> ax.images[0].get_array().shape
    (32, 32, 3)
    """
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots()
    rgb = overlay_rgb(image, labels, mask=mask, alpha=alpha, boundaries=boundaries)
    ax.imshow(rgb)
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    return ax


def plot_probabilities(
    proba, *, mask=None, axes=None, cmap="viridis", uncertainty=True, colorbar=True
):
    """Show the probability map of every component and the uncertainty.

    The uncertainty of a pixel is the entropy of its posterior (computed
    with :func:`scipy.stats.entropy`, in nats): 0 where one component takes
    it all, ``log(n_components)`` where all are equally likely.

    Parameters
    ----------
    proba : array-like of shape (height, width, n_components)
        Probabilities of one image, e.g. ``model.predict_proba(images)[i]``.

    mask : array-like of bool of shape (height, width), default=None
        Pixels to show; the others are blank. By default the pixels whose
        probabilities are all 0, which the estimators return outside their
        mask.

    axes : array-like of matplotlib Axes, default=None
        ``n_components`` axes (one more with ``uncertainty``); a new figure
        with one row of them if None.

    cmap : str or Colormap, default="viridis"
        Colour map of the probabilities.

    uncertainty : bool, default=True
        Also show the entropy map, in the last axes.

    colorbar : bool, default=True
        Add a colour bar to the probabilities and one to the entropy.

    Returns
    -------
    axes : ndarray of matplotlib Axes
        The axes drawn on: component ``k`` in ``axes[k]``, then the
        uncertainty.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.mixture import GaussianMixture
    >>> from skdgmm import PixelwiseMixture
    >>> from skdgmm.datasets import make_segmentation_images
    >>> from skdgmm.plotting import plot_probabilities
    >>> images, _ = make_segmentation_images(1, (32, 32), random_state=0)
    >>> model = PixelwiseMixture(GaussianMixture(3, random_state=0)).fit(images)
    >>> axes = plot_probabilities(model.predict_proba(images)[0])
    >>> len(axes)
    4
    """
    plt = _pyplot()
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 3:
        raise ValueError(
            f"Expected the probabilities of one image, (height, width, "
            f"n_components); got an array of shape {proba.shape}."
        )
    n_components = proba.shape[-1]
    mask = proba.sum(-1) > 0 if mask is None else np.asarray(mask, dtype=bool)
    n_axes = n_components + bool(uncertainty)
    if axes is None:
        _, axes = plt.subplots(
            1, n_axes, figsize=(3.0 * n_axes, 3.2), squeeze=False, layout="constrained"
        )
    axes = np.ravel(axes)
    if len(axes) != n_axes:
        raise ValueError(
            f"Expected {n_axes} axes ({n_components} components"
            f"{' and the uncertainty' if uncertainty else ''}); got {len(axes)}."
        )
    for k, ax in enumerate(axes[:n_components]):
        image = ax.imshow(
            np.where(mask, proba[..., k], np.nan), cmap=cmap, vmin=0.0, vmax=1.0
        )
        ax.set_title(f"component {k}")
        ax.set_axis_off()
    if colorbar:
        ax.figure.colorbar(image, ax=axes[:n_components], shrink=0.8)
    if uncertainty:
        ax = axes[-1]
        # entropy normalises each pixel's probabilities, so only pixels with
        # some probability (inside the mask) are passed to it
        uncertain = np.full(mask.shape, np.nan)
        uncertain[mask] = entropy(proba[mask], axis=-1)
        image = ax.imshow(uncertain, cmap="magma", vmin=0.0, vmax=np.log(n_components))
        ax.set_title("uncertainty (entropy)")
        ax.set_axis_off()
        if colorbar:
            ax.figure.colorbar(image, ax=ax, shrink=0.8)
    return axes


def plot_loss_curve(estimator, ax=None):
    """Plot the training loss of a fitted DeepGaussianMixture.

    The loss (``loss_curve_``: the mixture's energy plus the Potts and mean
    regularisation terms) on the left axis, the log-likelihood per pixel
    (``lower_bounds_``) on a second axis on the right, against the training
    iterations after the network's pre-training.

    Parameters
    ----------
    estimator : DeepGaussianMixture or Pipeline ending with one
        A fitted model.

    ax : matplotlib Axes, default=None
        Where to draw; a new figure if None.

    Returns
    -------
    ax : matplotlib Axes
        The axes of the loss; the log-likelihood is on its twin.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skdgmm import DeepGaussianMixture
    >>> from skdgmm.datasets import make_segmentation_images
    >>> from skdgmm.plotting import plot_loss_curve
    >>> images, _ = make_segmentation_images(2, (16, 16), random_state=0)
    >>> model = DeepGaussianMixture(3, max_iter=8, tol=0, random_state=0,
    ...                             device="cpu").fit(images)
    >>> ax = plot_loss_curve(model)
    >>> len(ax.lines[0].get_xdata())
    8
    """
    plt = _pyplot()
    if isinstance(estimator, Pipeline):
        estimator = estimator[-1]
    check_is_fitted(estimator)
    if not hasattr(estimator, "loss_curve_"):
        raise TypeError(
            f"plot_loss_curve needs a fitted DeepGaussianMixture; "
            f"{type(estimator).__name__} has no loss_curve_."
        )
    if ax is None:
        _, ax = plt.subplots(layout="constrained")
    iterations = np.arange(1, len(estimator.loss_curve_) + 1)
    (loss,) = ax.plot(iterations, estimator.loss_curve_, color="tab:blue")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    twin = ax.twinx()
    (likelihood,) = twin.plot(
        iterations, estimator.lower_bounds_, color="tab:orange", linestyle="--"
    )
    twin.set_ylabel("log-likelihood per pixel")
    ax.legend(
        [loss, likelihood], ["loss", "log-likelihood per pixel"], loc="center right"
    )
    return ax
