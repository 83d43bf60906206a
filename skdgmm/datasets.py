"""Synthetic image stacks with ground truth, and bundled sample images."""

from importlib import resources

import numpy as np
from scipy import ndimage
from sklearn.utils import check_random_state


def make_segmentation_images(
    n_images=4,
    shape=(64, 64),
    *,
    n_classes=3,
    n_channels=1,
    noise=0.3,
    smoothness=4.0,
    bias_field=0.0,
    random_state=None,
):
    """Piecewise-constant images with Gaussian noise and their label maps.

    Regions are the argmax of smoothed random fields, one per class, so they
    are blobs of a size set by ``smoothness``. Class ``k`` has intensity
    ``k`` in the first channel; other channels get the class intensities in
    a random order, so that every channel carries some of the contrast.
    Intensities can be multiplied by a smooth bias field, the slowly varying
    gain of MRI coils, which makes one class brighter in some parts of an
    image than in others.

    Parameters
    ----------
    n_images : int, default=4
    shape : tuple of int, default=(64, 64)
        Spatial shape: two axes for images, three for volumes.
    n_classes : int, default=3
    n_channels : int, default=1
        With 1 the images have no channel axis.
    noise : float, default=0.3
        Standard deviation of the Gaussian noise (classes are 1 apart).
    smoothness : float, default=4.0
        Standard deviation, in pixels, of the filter shaping the regions.
    bias_field : float, default=0.0
        Strength of the multiplicative bias field: each image (all its
        channels) is multiplied by ``exp(bias_field * b)``, where ``b`` is a
        random field smoothed over a quarter of the image size and scaled to
        a maximum magnitude of 1. 0 leaves the images unbiased; noise is added
        after the bias.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    images : ndarray of shape ``(n_images, *shape)`` or ``(n_images, *shape, n_channels)``
    labels : ndarray of int of shape ``(n_images, *shape)``

    Examples
    --------
    >>> from skdgmm.datasets import make_segmentation_images
    >>> images, labels = make_segmentation_images(2, (16, 16), random_state=0)
    >>> images.shape, labels.shape
    ((2, 16, 16), (2, 16, 16))
    >>> biased, labels = make_segmentation_images(
    ...     2, (16, 16), noise=0.0, bias_field=0.3, random_state=0
    ... )
    >>> class_1 = biased[labels == 1]  # intensity 1 without the bias
    >>> round(float(class_1.min()), 2), round(float(class_1.max()), 2)
    (0.74, 1.28)
    """
    rng = check_random_state(random_state)
    fields = rng.standard_normal((n_images, n_classes, *shape))
    sigma = (0, 0) + (smoothness,) * len(shape)
    labels = ndimage.gaussian_filter(fields, sigma).argmax(1)
    intensities = np.stack(
        [np.arange(n_classes, dtype=float)]
        + [rng.permutation(n_classes).astype(float) for _ in range(n_channels - 1)],
        axis=-1,
    )
    images = intensities[labels]
    if bias_field:
        field = ndimage.gaussian_filter(
            rng.standard_normal(labels.shape),
            (0,) + tuple(size / 4 for size in shape),
            mode="wrap",
        )
        field /= np.abs(field).max(axis=tuple(range(1, field.ndim)), keepdims=True)
        images = images * np.exp(bias_field * field)[..., np.newaxis]
    images = images + noise * rng.standard_normal(labels.shape + (n_channels,))
    if n_channels == 1:
        images = images[..., 0]
    return images, labels


def load_nuclei():
    """A fluorescence microscopy image of cell nuclei with its ground truth.

    One 256x256 grey image from the 2018 Data Science Bowl (BBBC038, CC0),
    with the nucleus mask. Segmenting it is a K=2 problem.

    Returns
    -------
    image : ndarray of shape (256, 256), float in [0, 1]
    labels : ndarray of shape (256, 256), int, 1 on nuclei

    Examples
    --------
    >>> from skdgmm.datasets import load_nuclei
    >>> image, labels = load_nuclei()
    >>> image.shape, int(labels.max())
    ((256, 256), 1)
    """
    with resources.files("skdgmm").joinpath("data/nuclei.npz").open("rb") as f:
        data = np.load(f)
        return data["image"] / 255.0, data["labels"].astype(int)


def load_mni152():
    """Three axial slices of the MNI152 brain template with tissue labels.

    Slices 80, 90 and 100 (1 mm, 233x197) of the skull-stripped T1 of the
    ICBM152 2009 template, as shipped with nilearn, with the brain mask and
    hard labels CSF / grey matter / white matter: a K=3 problem inside the
    mask. The template is an average of many subjects and its tissue maps
    come from segmenting it, so it is a sanity check rather than a benchmark.

    Returns
    -------
    images : ndarray of shape (3, 233, 197), float in [0, 1]
    labels : ndarray of shape (3, 233, 197), int
        0 outside the brain mask, 1 CSF, 2 grey matter, 3 white matter.
    mask : ndarray of shape (3, 233, 197), bool
        The brain.

    Examples
    --------
    >>> from skdgmm.datasets import load_mni152
    >>> images, labels, mask = load_mni152()
    >>> images.shape, sorted(set(labels[mask].tolist()))
    ((3, 233, 197), [1, 2, 3])
    """
    with resources.files("skdgmm").joinpath("data/mni152.npz").open("rb") as f:
        data = np.load(f)
        return data["t1"] / 255.0, data["labels"].astype(int), data["brain_mask"]
