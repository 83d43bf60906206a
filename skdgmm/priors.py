"""Priors from a few labelled images: partial labels in, named classes out."""

import numpy as np
import torch

from ._data import map_pixels
from ._gaussian import (
    compute_precision_cholesky,
    estimate_gaussian_parameters,
    precisions_from_cholesky,
)
from ._layout import as_array, check_mask, layout_for, masked_pixels


def init_from_labels(
    X,
    labels,
    *,
    n_components=None,
    covariance_type="full",
    reg_covar=1e-6,
    spatial_dims=2,
):
    """Initial mixture parameters from labelled pixels.

    The pixels of class ``k`` give component ``k``: its share of the
    labelled pixels, its mean and its covariance (the M-step of the labels).
    Pass the result to :class:`~skdgmm.DeepGaussianMixture` (or
    :class:`sklearn.mixture.GaussianMixture`): component ``k`` of the fitted
    model then starts as class ``k``, so that its labels are named once for
    a whole study. Fitted on a collection, the model keeps the classes in
    this order; ``mean_regularization`` holds them there more firmly.

    Parameters
    ----------
    X : array-like
        Tabular data ``(n_samples, n_features)`` or images
        ``(n_images, *spatial[, n_channels])``, as for the estimators.

    labels : array-like of int
        One label per pixel (shape ``X.shape[:1 + spatial_dims]``, or
        ``(n_samples,)``): the class ``0 .. n_components - 1``, or ``-1``
        for unlabelled pixels (scikit-learn's semi-supervised convention).

    n_components : int, default=None
        Number of classes; by default the largest label plus one.

    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        The shape of the precisions returned, as in GaussianMixture.

    reg_covar : float, default=1e-6
        Added to the diagonal of the covariances (input units).

    spatial_dims : {2, 3}, default=2
        Spatial axes of image stacks.

    Returns
    -------
    init : dict
        ``weights_init``, ``means_init`` and ``precisions_init``.

    Raises
    ------
    ValueError
        If the labels are not shaped as the pixels of X, hold values below
        -1 or of ``n_components`` and above, or leave a class without pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from skdgmm import DeepGaussianMixture
    >>> from skdgmm.datasets import make_segmentation_images
    >>> from skdgmm.priors import init_from_labels
    >>> images, truth = make_segmentation_images(4, (24, 24), random_state=0)
    >>> partial = np.full_like(truth, -1)
    >>> partial[0] = truth[0]  # one labelled image
    >>> init = init_from_labels(images, partial)
    >>> init["means_init"].shape
    (3, 1)
    >>> model = DeepGaussianMixture(3, means_init=init["means_init"],
    ...                             random_state=0, device="cpu")
    >>> labels = model.fit_predict(images[1:])  # class k is label k
    """
    X = np.asarray(X, dtype=np.float64)
    layout = layout_for(X.ndim, spatial_dims)
    labels = check_labels(labels, layout.pixel_shape(X.shape), n_components)
    if n_components is None:
        n_components = int(labels.max()) + 1
    return labelled_mixture(X, labels, layout, n_components, covariance_type, reg_covar)


def check_labels(labels, pixel_shape, n_components=None, mask=None):
    """Validate partial labels: an int array of ``pixel_shape``, each value
    -1 (unlabelled) or a class ``0 .. n_components - 1`` (by default, any
    class), every class with a labelled pixel. Pixels outside a ``mask``
    are ignored (they come back as -1).

    Returns
    -------
    labels : ndarray of int64
        A copy (torch < 2.3 takes no uint16 or uint32 labels).

    Raises
    ------
    TypeError
        If the labels are not integers.
    ValueError
        If they are not shaped ``pixel_shape``, hold values below -1 or of
        ``n_components`` and above, or leave a class without pixels.
    """
    # as X is read: a torch tensor on a GPU too, under array_api_dispatch
    labels = np.asarray(as_array(labels, "labels"))
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(
            f"labels must be integers (-1 for unlabelled pixels); got dtype "
            f"{labels.dtype}."
        )
    check_mask(labels >= 0, pixel_shape)
    labels = labels.astype(np.int64)
    if mask is not None:
        labels[~mask] = -1
    labelled = labels >= 0
    if not labelled.any():
        raise ValueError("labels hold no labelled pixel (all are -1).")
    n_classes = int(labels.max()) + 1 if n_components is None else n_components
    if labels.min() < -1 or labels.max() >= n_classes:
        raise ValueError(
            f"labels must be -1 (unlabelled) or 0 .. {n_classes - 1}; got "
            f"values from {labels.min()} to {labels.max()}."
        )
    counts = np.bincount(labels[labelled], minlength=n_classes)
    if (counts == 0).any():
        raise ValueError(
            f"Classes {np.flatnonzero(counts == 0).tolist()} have no labelled "
            "pixel: every class needs at least one."
        )
    return labels


def labelled_mixture(
    X, labels, layout, n_components, covariance_type, reg_covar, rescaling=None
):
    """The M-step of validated ``labels`` on the pixels of X laid out as
    ``layout`` says: ``weights_init``, ``means_init`` and
    ``precisions_init`` in X's units, or in those of the typical image where
    each image is mapped by ``rescaling`` (its slopes and offsets)."""
    labelled = labels >= 0
    pixels = masked_pixels(X, labelled, layout)
    pixels = map_pixels(pixels, np.nonzero(labelled)[0], rescaling)
    pixels = torch.as_tensor(pixels, dtype=torch.float64)[None]
    resp = torch.nn.functional.one_hot(
        torch.as_tensor(labels[labelled]), n_components
    ).double()[None]
    nk, means, covariances = estimate_gaussian_parameters(
        pixels, resp, reg_covar, covariance_type
    )
    precisions = precisions_from_cholesky(
        compute_precision_cholesky(covariances, covariance_type), covariance_type
    )
    return dict(
        weights_init=(nk / nk.sum()).numpy()[0],
        means_init=means.numpy()[0],
        precisions_init=precisions.numpy()[0],
    )
