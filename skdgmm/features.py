"""Per-pixel features with neighbourhood context."""

from numbers import Integral

import numpy as np
from scipy import ndimage
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ._base import CHANNEL_AXIS_CONSTRAINT
from ._layout import channels_first, mask_channels_first, validate_input


class SpatialFeatures(TransformerMixin, BaseEstimator):
    """Per-pixel features that see the pixel's neighbourhood.

    For every channel of an image stack: the intensity, and at each scale
    ``sigma`` the Gaussian-smoothed intensity, the local standard deviation
    (texture) and the gradient magnitude of the smoothed image (edges),
    computed with :mod:`scipy.ndimage`; optionally the pixel's normalised
    coordinates. With a mask, smoothing is normalised convolution inside the
    mask (pixels outside never leak in) and features outside are 0.

    Tabular input has no neighbourhood: it is returned unchanged, so that the
    transformer can sit in any pipeline. Images ``(n, *spatial[, C])`` come
    out as ``(n, *spatial, n_features_out)``, ready for
    :class:`~skdgmm.DeepGaussianMixture` or
    :class:`~skdgmm.PixelwiseMixture`.

    Parameters
    ----------
    sigmas : tuple of float, default=(1.0, 2.0, 4.0)
        Scales, in pixels, of the smoothed features.
    local_std : bool, default=True
        Include the local standard deviation at each scale.
    edges : bool, default=True
        Include the gradient magnitude at each scale.
    coordinates : bool, default=False
        Include the pixel coordinates, scaled to [0, 1].
    spatial_dims : {2, 3}, default=2
    channel_axis : "auto", None or int, default="auto"
        The axis of image stacks that holds the channels: None, -1, 1
        (PyTorch's ``(n, C, *spatial)``), or "auto", as in
        DeepGaussianMixture. The features come out on the same axis
        (the last for None and "auto"). A 2-D array is tabular data; a
        single image is a stack of one, ``X[None]``.

    Attributes
    ----------
    n_features_in_ : int
        Channels (or features of tabular data).

    Examples
    --------
    >>> from skdgmm import SpatialFeatures
    >>> from skdgmm.datasets import make_segmentation_images
    >>> images, _ = make_segmentation_images(2, (16, 16), random_state=0)
    >>> SpatialFeatures(sigmas=(1, 2)).fit_transform(images).shape
    (2, 16, 16, 7)
    """

    _parameter_constraints: dict = {
        "sigmas": ["array-like"],
        "local_std": ["boolean"],
        "edges": ["boolean"],
        "coordinates": ["boolean"],
        "spatial_dims": [Interval(Integral, 2, 3, closed="both")],
        "channel_axis": CHANNEL_AXIS_CONSTRAINT,
    }

    def __init__(
        self,
        sigmas=(1.0, 2.0, 4.0),
        *,
        local_std=True,
        edges=True,
        coordinates=False,
        spatial_dims=2,
        channel_axis="auto",
    ):
        self.sigmas = sigmas
        self.local_std = local_std
        self.edges = edges
        self.coordinates = coordinates
        self.spatial_dims = spatial_dims
        self.channel_axis = channel_axis

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, mask=None):
        """Check X and remember its layout.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or image stack
            Only its layout and number of channels are kept.
        y : Ignored
        mask : array-like of bool, default=None
            Checked against X; the features themselves are computed in
            :meth:`transform`.

        Returns
        -------
        self : object
        """
        self._check_sigmas()
        validate_input(self, X, mask, reset=True)
        return self

    def _check_sigmas(self):
        """A ValueError unless ``sigmas`` are finite positive numbers."""
        try:
            sigmas = np.asarray(self.sigmas, dtype=float)
        except (TypeError, ValueError):
            sigmas = None
        if (
            sigmas is None
            or sigmas.ndim != 1
            or not (np.isfinite(sigmas) & (sigmas > 0)).all()
        ):
            raise ValueError(
                f"sigmas must be positive finite numbers, a sequence of scales "
                f"in pixels; got {self.sigmas!r}."
            )

    def _filters(self):
        names = ["intensity"]
        for sigma in np.ravel(self.sigmas):
            names.append(f"smooth_s{sigma:g}")
            if self.local_std:
                names.append(f"std_s{sigma:g}")
            if self.edges:
                names.append(f"edges_s{sigma:g}")
        return names

    def get_feature_names_out(self, input_features=None):
        """Names of the output features.

        Parameters
        ----------
        input_features : array-like of str, default=None
            Names of the input channels (tabular data: its columns).

        Returns
        -------
        names : ndarray of str
        """
        check_is_fitted(self)
        if input_features is None:
            input_features = getattr(
                self,
                "feature_names_in_",
                [f"x{i}" for i in range(self.n_features_in_)],
            )
        elif len(input_features) != self.n_features_in_:
            raise ValueError(
                f"input_features should have length {self.n_features_in_}; "
                f"got {len(input_features)}."
            )
        if self._layout.tabular:
            return np.asarray(input_features, dtype=object)
        names = [f"{c}_{f}" for c in input_features for f in self._filters()]
        if self.coordinates:
            names += [f"coordinate_{axis}" for axis in range(self.spatial_dims)]
        return np.asarray(names, dtype=object)

    def transform(self, X, *, mask=None):
        """Compute the features of every pixel.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or image stack
        mask : array-like of bool, default=None
            Smoothing stays inside the mask; features outside it are 0.

        Returns
        -------
        features : ndarray
            Tabular input unchanged; images ``(n, *spatial, n_features_out)``
            (the features on axis 1 for ``channel_axis=1``).
        """
        check_is_fitted(self)
        X, mask, layout = validate_input(self, X, mask, reset=False)
        if layout.tabular:
            return X
        X = channels_first(X, layout)
        weights = (
            np.ones((len(X),) + X.shape[2:])
            if mask is None
            else mask_channels_first(mask, layout).astype(float)
        )
        features = np.stack([self._image_features(x, w) for x, w in zip(X, weights)])
        if isinstance(self.channel_axis, Integral) and layout.channel_axis:
            # the features on the input's channel axis
            features = np.moveaxis(features, -1, self.channel_axis % features.ndim)
        return features

    def _image_features(self, image, weight):
        """Features of one image ``(C, *spatial)`` -> ``(*spatial, F)``."""

        # scipy's kernel reaches 4 sigmas: one wider than 4 image sizes (a
        # huge sigma) is cut there, where the smoothed image is nearly its
        # mean, so that its memory stays bounded. Sigmas far beyond that, or
        # below a tenth of a pixel (the identity), give the features of the
        # nearest of these bounds, which keep scipy's kernel finite.
        widest = 4 * max(weight.shape)

        def smooth(values, sigma):
            # normalised convolution: the mean over the mask's pixels only
            sigma = min(max(float(sigma), 0.01), 1e6 * widest)
            radius = min(int(4.0 * sigma + 0.5), widest)
            return ndimage.gaussian_filter(
                values * weight, sigma, radius=radius
            ) / np.maximum(ndimage.gaussian_filter(weight, sigma, radius=radius), 1e-12)

        out = []
        for channel in image.astype(float):
            out.append(channel)
            for sigma in np.ravel(self.sigmas):
                mean = smooth(channel, sigma)
                out.append(mean)
                if self.local_std:
                    variance = smooth(channel**2, sigma) - mean**2
                    out.append(np.sqrt(np.clip(variance, 0, None)))
                if self.edges:
                    out.append(ndimage.gaussian_gradient_magnitude(mean, 1.0))
        if self.coordinates:
            grids = np.meshgrid(
                *(np.linspace(0, 1, s) for s in weight.shape), indexing="ij"
            )
            out.extend(grids)
        return np.stack(out, axis=-1) * (weight > 0)[..., np.newaxis]
