"""EM for the spatially variant Gaussian mixture model (the classical baseline)."""

import warnings

import numpy as np
import torch
from sklearn import config_context
from sklearn.base import BaseEstimator, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted

from ._base import MIXTURE_CONSTRAINTS
from ._gaussian import (
    compute_precision_cholesky,
    estimate_gaussian_parameters,
    estimate_log_gaussian_prob,
)
from ._layout import masked_pixels, unmask_pixels, validate_input


class SpatiallyVariantGaussianMixture(BaseEstimator):
    """Spatially variant Gaussian mixture fitted by EM.

    Every pixel has its own mixing weights ``w[x, k]`` (Sanjay-Gopal and
    Hebert, 1998), the Gaussians are shared. EM alternates
    ``w[x, k] <- w[x, k] p_k(x) / sum_j w[x, j] p_j(x)`` with the M-step of the
    Gaussians. It is the EM counterpart of
    ``DeepGaussianMixture(spatially_variant=True)``, started from a
    GaussianMixture fitted on the same pixels.

    Parameters
    ----------
    n_components : int, default=1
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    tol : float, default=1e-3
        EM stops when the mean log-likelihood per pixel changes by less.
    reg_covar : float, default=1e-6
    max_iter : int, default=100
    random_state : int, RandomState instance or None, default=None
        Seeds the initial GaussianMixture.
    spatial_dims : {2, 3}, default=2
    channel_axis : "auto", None or int, default="auto"
        The axis of image stacks that holds the channels, read as in
        :class:`~skdgmm.DeepGaussianMixture`.

    Attributes
    ----------
    resp_ : ndarray of shape (n_pixels, n_components)
        Weights of the training pixels inside the mask.
    means_, covariances_, precisions_cholesky_ : ndarray
        The Gaussians, shaped as in GaussianMixture.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood per pixel at the last iteration.
    n_features_in_ : int

    Examples
    --------
    >>> from skdgmm.svgmm import SpatiallyVariantGaussianMixture
    >>> from skdgmm.datasets import make_segmentation_images
    >>> images, _ = make_segmentation_images(1, (16, 16), random_state=0)
    >>> SpatiallyVariantGaussianMixture(3, random_state=0).fit_predict(images).shape
    (1, 16, 16)
    """

    _parameter_constraints: dict = dict(MIXTURE_CONSTRAINTS)

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        random_state=None,
        spatial_dims=2,
        channel_axis="auto",
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.random_state = random_state
        self.spatial_dims = spatial_dims
        self.channel_axis = channel_axis

    def _log_prob(self, pixels):
        return estimate_log_gaussian_prob(
            torch.as_tensor(pixels, dtype=torch.float64)[None],
            torch.as_tensor(self.means_)[None],
            torch.as_tensor(self.precisions_cholesky_)[None],
            self.covariance_type,
        )[0]

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, mask=None):
        """Fit by EM on the pixels of X inside the mask.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or image stack
        y : Ignored
        mask : array-like of bool, default=None

        Returns
        -------
        self : object
        """
        X, mask, layout = validate_input(self, X, mask, reset=True)
        pixels = masked_pixels(X, mask, layout).astype(np.float64)
        # NumPy pixels whatever the input (array_api_dispatch would limit
        # init_params)
        with config_context(array_api_dispatch=False):
            initial = GaussianMixture(
                self.n_components,
                covariance_type=self.covariance_type,
                tol=self.tol,
                reg_covar=self.reg_covar,
                random_state=self.random_state,
            ).fit(pixels)
        self.means_ = initial.means_
        self.covariances_ = initial.covariances_
        self.precisions_cholesky_ = initial.precisions_cholesky_
        log_w = torch.as_tensor(initial.predict_proba(pixels)).clamp_min(1e-300).log()
        X_t = torch.as_tensor(pixels)[None]
        lower_bound, self.converged_, self.n_iter_ = -np.inf, False, 0
        for n_iter in range(1, self.max_iter + 1):
            self.n_iter_ = n_iter
            weighted = self._log_prob(pixels) + log_w
            log_norm = torch.logsumexp(weighted, -1, keepdim=True)
            log_w = weighted - log_norm
            previous, lower_bound = lower_bound, float(log_norm.mean())
            _, means, covariances = estimate_gaussian_parameters(
                X_t, log_w.exp()[None], self.reg_covar, self.covariance_type
            )
            self.means_, self.covariances_ = means[0].numpy(), covariances[0].numpy()
            self.precisions_cholesky_ = compute_precision_cholesky(
                covariances, self.covariance_type
            )[0].numpy()
            if abs(lower_bound - previous) < self.tol:
                self.converged_ = True
                break
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "EM did not converge. Try increasing max_iter or tol.",
                ConvergenceWarning,
            )
        self.lower_bound_ = lower_bound
        self.resp_ = log_w.exp().numpy()
        return self

    def fit_predict(self, X, y=None, *, mask=None):
        """Fit, then return the label of the largest weight of every pixel.

        Pixels outside the mask get -1.
        """
        self.fit(X, mask=mask)
        X, mask, layout = validate_input(self, X, mask, reset=False)
        return unmask_pixels(self.resp_.argmax(-1), X.shape, mask, layout, -1)

    def predict(self, X, *, mask=None):
        """Label new pixels by their most likely Gaussian.

        The weights of new pixels are unknown; starting from uniform
        weights, EM with the fitted Gaussians fixed converges to the
        component of highest density.
        """
        check_is_fitted(self)
        X, mask, layout = validate_input(self, X, mask, reset=False)
        labels = self._log_prob(masked_pixels(X, mask, layout)).argmax(-1).numpy()
        return unmask_pixels(labels, X.shape, mask, layout, -1)
