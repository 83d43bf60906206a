"""Gaussian mixture estimation functions in torch.

Torch counterparts of the estimation functions of :mod:`sklearn.mixture`
(``_estimate_gaussian_parameters``, ``_compute_precision_cholesky``,
``_estimate_log_gaussian_prob``), written once for the four covariance types
and differentiable, so that the M-step can sit inside a network's loss.

Every function works on a leading batch of independent groups of pixels (one
group per image): ``X`` has shape ``(B, P, F)`` (``P`` pixels with ``F``
features) and ``resp`` has shape ``(B, P, K)``. Pixels outside a mask are
excluded by giving them zero responsibility. The parameter shapes follow
scikit-learn with the extra leading batch axis:

=============  ===========  ================
type           covariances  precisions_chol
=============  ===========  ================
``full``       (B, K, F, F) (B, K, F, F)
``tied``       (B, F, F)    (B, F, F)
``diag``       (B, K, F)    (B, K, F)
``spherical``  (B, K)       (B, K)
=============  ===========  ================
"""

import math

import torch

_ILL_DEFINED_COVARIANCE = (
    "Fitting the mixture model failed because some components have "
    "ill-defined empirical covariance (for instance caused by singleton "
    "or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data."
)
_NON_FINITE_COVARIANCE = (
    "Fitting the mixture model failed because some covariances are not "
    "finite: the optimization diverged. Try a smaller learning_rate, or "
    "scale the input data (values that differ by less than their rounding "
    "error cannot be modelled)."
)


def _ill_defined(covariances):
    """The error for covariances that are not positive definite."""
    if bool(torch.isfinite(covariances).all()):
        return ValueError(_ILL_DEFINED_COVARIANCE)
    return ValueError(_NON_FINITE_COVARIANCE)


def _estimate_covariances_full(resp, X, nk, means, reg_covar):
    diff = X.unsqueeze(1) - means.unsqueeze(2)  # (B, K, P, F)
    cov = torch.einsum("bpk,bkpf,bkpg->bkfg", resp, diff, diff) / nk[..., None, None]
    eye = torch.eye(X.shape[-1], dtype=X.dtype, device=X.device)
    return cov + reg_covar * eye


def _estimate_covariances_tied(resp, X, nk, means, reg_covar):
    # weighting by the pixel's total responsibility drops masked pixels
    avg_X2 = X.mT @ (X * resp.sum(-1, keepdim=True))
    avg_means2 = (nk.unsqueeze(-1) * means).mT @ means
    cov = (avg_X2 - avg_means2) / nk.sum(-1)[..., None, None]
    eye = torch.eye(X.shape[-1], dtype=X.dtype, device=X.device)
    return cov + reg_covar * eye


def _estimate_covariances_diag(resp, X, nk, means, reg_covar):
    avg_X2 = (resp.mT @ (X * X)) / nk.unsqueeze(-1)
    avg_means2 = means**2
    # the difference of the two moments can come out slightly negative
    return (avg_X2 - avg_means2).clamp_min(0) + reg_covar


def _estimate_covariances_spherical(resp, X, nk, means, reg_covar):
    return _estimate_covariances_diag(resp, X, nk, means, reg_covar).mean(-1)


_ESTIMATE_COVARIANCES = {
    "full": _estimate_covariances_full,
    "tied": _estimate_covariances_tied,
    "diag": _estimate_covariances_diag,
    "spherical": _estimate_covariances_spherical,
}


def estimate_gaussian_parameters(X, resp, reg_covar, covariance_type):
    """M-step: the weighted Gaussian parameters of each component.

    Parameters
    ----------
    X : torch.Tensor of shape (B, P, F)
        Pixels of ``B`` independent groups.
    resp : torch.Tensor of shape (B, P, K)
        Responsibilities; zero rows exclude pixels (masks).
    reg_covar : float
        Non-negative regularization added to the diagonal of covariances.
    covariance_type : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    nk : torch.Tensor of shape (B, K)
        Soft counts of each component (with the same ``10 * eps`` floor as
        scikit-learn, so that empty components do not divide by zero).
    means : torch.Tensor of shape (B, K, F)
    covariances : torch.Tensor
        Shape depends on ``covariance_type`` (see the module docstring).
    """
    nk = resp.sum(-2) + 10 * torch.finfo(resp.dtype).eps
    means = (resp.mT @ X) / nk.unsqueeze(-1)
    covariances = _ESTIMATE_COVARIANCES[covariance_type](resp, X, nk, means, reg_covar)
    return nk, means, covariances


def component_variances(covariances, covariance_type):
    """Variance of every feature in every component: shape ``(B, K, F)``, or
    ``(B, 1, F)`` for tied covariances and ``(B, K, 1)`` for spherical ones
    (both broadcast against the means)."""
    if covariance_type == "full":
        return covariances.diagonal(dim1=-2, dim2=-1)
    if covariance_type == "tied":
        return covariances.diagonal(dim1=-2, dim2=-1).unsqueeze(-2)
    if covariance_type == "spherical":
        return covariances.unsqueeze(-1)
    return covariances


def compute_precision_cholesky(covariances, covariance_type):
    """Cholesky factor of the precision matrices, as scikit-learn defines it.

    Raises
    ------
    ValueError
        If a covariance matrix is not positive definite or not finite.
    """
    if covariance_type in ("full", "tied"):
        eye = torch.eye(
            covariances.shape[-1], dtype=covariances.dtype, device=covariances.device
        ).expand_as(covariances)
        chol, info = torch.linalg.cholesky_ex(covariances)
        if bool((info != 0).any()):
            # Semi-definite only up to rounding (duplicated channels, whose
            # reg_covar is below float32's resolution): a jitter just above
            # the rounding error of the largest variance makes it definite.
            largest = covariances.diagonal(dim1=-2, dim2=-1).amax(-1)
            jitter = 1e3 * torch.finfo(covariances.dtype).eps * largest
            covariances = covariances + jitter[..., None, None] * eye
            chol, info = torch.linalg.cholesky_ex(covariances)
            if bool((info != 0).any()):
                raise _ill_defined(covariances)
        return torch.linalg.solve_triangular(chol, eye, upper=False).mT
    # written so that NaN fails too
    if not bool((covariances > 0).all()):
        raise _ill_defined(covariances)
    return covariances.rsqrt()


def precisions_from_cholesky(precisions_chol, covariance_type):
    """Precision matrices from their Cholesky factors."""
    if covariance_type in ("full", "tied"):
        return precisions_chol @ precisions_chol.mT
    return precisions_chol**2


def estimate_log_gaussian_prob(X, means, precisions_chol, covariance_type):
    """Log-density of every pixel under every component.

    Parameters
    ----------
    X : torch.Tensor of shape (B, P, F)
    means : torch.Tensor of shape (B, K, F)
    precisions_chol : torch.Tensor
        Cholesky factors of the precisions (see the module docstring).
    covariance_type : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    log_prob : torch.Tensor of shape (B, P, K)
    """
    n_features = X.shape[-1]
    if covariance_type == "full":
        log_det = precisions_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        y = torch.einsum("bpf,bkfg->bpkg", X, precisions_chol)
        y = y - torch.einsum("bkf,bkfg->bkg", means, precisions_chol).unsqueeze(1)
        mahalanobis = (y * y).sum(-1)
    elif covariance_type == "tied":
        log_det = precisions_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1, keepdim=True)
        y = (X @ precisions_chol).unsqueeze(2) - (means @ precisions_chol).unsqueeze(1)
        mahalanobis = (y * y).sum(-1)
    else:
        diff = X.unsqueeze(2) - means.unsqueeze(1)  # (B, P, K, F)
        if covariance_type == "diag":
            log_det = precisions_chol.log().sum(-1)
            y = diff * precisions_chol.unsqueeze(1)
        else:  # spherical
            log_det = n_features * precisions_chol.log()
            y = diff * precisions_chol[:, None, :, None]
        mahalanobis = (y * y).sum(-1)
    return -0.5 * (
        n_features * math.log(2 * math.pi) + mahalanobis
    ) + log_det.unsqueeze(1)


def mixture_log_likelihood(X, log_weights, means, precisions_chol, covariance_type):
    """Log-likelihood of every pixel under a Gaussian mixture.

    ``log_weights`` broadcasts against ``(B, P, K)``: ``(B, 1, K)`` for one
    mixing weight per component, ``(B, P, K)`` for pixel-wise weights.

    Returns
    -------
    log_likelihood : torch.Tensor of shape (B, P)
    """
    log_prob = estimate_log_gaussian_prob(X, means, precisions_chol, covariance_type)
    return torch.logsumexp(log_prob + log_weights, -1)


def mixture_posterior(X, log_weights, means, precisions_chol, covariance_type):
    """Posterior responsibilities of every pixel under a Gaussian mixture
    (the E-step), ``(B, P, K)``; ``log_weights`` as for
    :func:`mixture_log_likelihood`, pixel-wise priors included. A pixel that
    no component can explain (all weights zero) gets zeros."""
    log_prob = estimate_log_gaussian_prob(X, means, precisions_chol, covariance_type)
    return (log_prob + log_weights).softmax(-1).nan_to_num(0.0)


def precision_shape(covariance_type, n_components, n_features):
    """Shape of the (user-facing, numpy) precisions or covariances."""
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]


def n_parameters(covariance_type, n_components, n_features):
    """Number of free parameters of a Gaussian mixture."""
    cov_params = {
        "full": n_components * n_features * (n_features + 1) / 2.0,
        "diag": n_components * n_features,
        "tied": n_features * (n_features + 1) / 2.0,
        "spherical": n_components,
    }[covariance_type]
    return int(cov_params + n_components * n_features + n_components - 1)
