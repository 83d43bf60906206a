"""Any scikit-learn mixture or clusterer applied to the pixels of images."""

from numbers import Integral

from sklearn.base import BaseEstimator, MetaEstimatorMixin, _fit_context, clone
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._base import CHANNEL_AXIS_CONSTRAINT
from ._layout import masked_pixels, unmask_pixels, validate_input


def _estimator_has(method):
    """The fitted estimator has ``method`` (the unfitted one before fit)."""

    def check(self):
        getattr(getattr(self, "estimator_", self.estimator), method)
        return True

    return check


class PixelwiseMixture(MetaEstimatorMixin, BaseEstimator):
    """Segment image stacks with a pixel-wise scikit-learn model.

    The wrapped estimator (``GaussianMixture``, ``KMeans``,
    ``BayesianGaussianMixture``...) sees every pixel inside the mask as one
    sample, its channels as features; outputs are mapped back to images. It
    takes the same layouts and masks as
    :class:`~skdgmm.DeepGaussianMixture`, which makes it the like-for-like
    baseline without a spatial prior.

    Parameters
    ----------
    estimator : estimator object
        A clusterer or mixture with ``fit`` and ``predict``; cloned in fit.

    spatial_dims : {2, 3}, default=2
        Spatial dimensions of image stacks, as in DeepGaussianMixture.

    channel_axis : "auto", None or int, default="auto"
        The axis of image stacks that holds the channels, read as in
        :class:`~skdgmm.DeepGaussianMixture`.

    Attributes
    ----------
    estimator_ : estimator object
        The fitted clone of ``estimator``.

    n_features_in_ : int
        Number of features (image channels).

    Examples
    --------
    >>> from sklearn.mixture import GaussianMixture
    >>> from skdgmm import PixelwiseMixture
    >>> from skdgmm.datasets import make_segmentation_images
    >>> images, _ = make_segmentation_images(2, (16, 16), random_state=0)
    >>> model = PixelwiseMixture(GaussianMixture(3, random_state=0)).fit(images)
    >>> model.predict(images).shape
    (2, 16, 16)
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict"])],
        "spatial_dims": [Interval(Integral, 2, 3, closed="both")],
        "channel_axis": CHANNEL_AXIS_CONSTRAINT,
    }

    def __init__(self, estimator, *, spatial_dims=2, channel_axis="auto"):
        self.estimator = estimator
        self.spatial_dims = spatial_dims
        self.channel_axis = channel_axis

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, *, mask=None, **fit_params):
        """Fit the estimator on the pixels of X inside the mask.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or image stack
            As in :meth:`skdgmm.DeepGaussianMixture.fit`.
        y : Ignored
        mask : array-like of bool, default=None
            Pixels to fit on.
        **fit_params : dict
            Passed to the estimator's ``fit``.

        Returns
        -------
        self : object
        """
        X, mask, layout = validate_input(self, X, mask, reset=True)
        self.estimator_ = clone(self.estimator).fit(
            masked_pixels(X, mask, layout), **fit_params
        )
        return self

    def _apply(self, method, X, mask, fill):
        """``method`` of the fitted estimator on every pixel, as images."""
        check_is_fitted(self)
        X, mask, layout = validate_input(self, X, mask, reset=False)
        pixels = masked_pixels(X, mask, layout)
        if len(pixels):
            values = getattr(self.estimator_, method)(pixels)
        else:
            # scikit-learn refuses empty arrays: one pixel gives the shape and
            # dtype of the (empty) output
            first = masked_pixels(X, None, layout)[:1]
            values = getattr(self.estimator_, method)(first)[:0]
        return unmask_pixels(values, X.shape, mask, layout, fill)

    def predict(self, X, *, mask=None):
        """Label of every pixel; -1 outside the mask.

        Parameters
        ----------
        X : array-like, as in fit
        mask : array-like of bool, default=None

        Returns
        -------
        labels : ndarray of int, shape ``X.shape[:1 + spatial_dims]``
            (``(n_samples,)`` for tabular data).
        """
        return self._apply("predict", X, mask, -1)

    def fit_predict(self, X, y=None, *, mask=None, **fit_params):
        """Fit on X, then label its pixels (see :meth:`predict`)."""
        return self.fit(X, mask=mask, **fit_params).predict(X, mask=mask)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X, *, mask=None):
        """Probability of each component for every pixel; 0 outside the mask."""
        return self._apply("predict_proba", X, mask, 0.0)

    @available_if(_estimator_has("score_samples"))
    def score_samples(self, X, *, mask=None):
        """Per-pixel score (log-likelihood for mixtures); 0 outside the mask."""
        return self._apply("score_samples", X, mask, 0.0)

    @available_if(_estimator_has("score"))
    def score(self, X, y=None, *, mask=None):
        """The estimator's score on the pixels inside the mask."""
        check_is_fitted(self)
        X, mask, layout = validate_input(self, X, mask, reset=False)
        return self.estimator_.score(masked_pixels(X, mask, layout))

    @available_if(_estimator_has("bic"))
    def bic(self, X, *, mask=None):
        """The estimator's BIC on the pixels inside the mask."""
        check_is_fitted(self)
        X, mask, layout = validate_input(self, X, mask, reset=False)
        return self.estimator_.bic(masked_pixels(X, mask, layout))

    @available_if(_estimator_has("aic"))
    def aic(self, X, *, mask=None):
        """The estimator's AIC on the pixels inside the mask."""
        check_is_fitted(self)
        X, mask, layout = validate_input(self, X, mask, reset=False)
        return self.estimator_.aic(masked_pixels(X, mask, layout))
