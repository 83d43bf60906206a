"""The torch M-step and log-density agree with scikit-learn's."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from sklearn.mixture._gaussian_mixture import (
    _compute_precision_cholesky,
    _estimate_gaussian_parameters,
    _estimate_log_gaussian_prob,
)

from skdgmm._gaussian import (
    compute_precision_cholesky,
    estimate_gaussian_parameters,
    estimate_log_gaussian_prob,
    precisions_from_cholesky,
)

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def _problem(seed, n_pixels=200, n_features=3, n_components=4):
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n_pixels, n_features)) * [1.0, 2.0, 0.5][:n_features]
    X += rng.standard_normal(n_features) * 3
    resp = rng.dirichlet(np.ones(n_components), size=n_pixels)
    return X, resp


def _t(a):
    return torch.as_tensor(a, dtype=torch.float64)[None]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("n_features", [1, 3])
def test_m_step_and_log_prob_match_sklearn(covariance_type, n_features):
    X, resp = _problem(0, n_features=n_features)
    nk, means, cov = _estimate_gaussian_parameters(X, resp, 1e-6, covariance_type)
    prec_chol = _compute_precision_cholesky(cov, covariance_type)
    log_prob = _estimate_log_gaussian_prob(X, means, prec_chol, covariance_type)

    t_nk, t_means, t_cov = estimate_gaussian_parameters(
        _t(X), _t(resp), 1e-6, covariance_type
    )
    t_prec_chol = compute_precision_cholesky(t_cov, covariance_type)
    t_log_prob = estimate_log_gaussian_prob(
        _t(X), t_means, t_prec_chol, covariance_type
    )

    assert_allclose(t_nk[0].numpy(), nk, rtol=1e-12)
    assert_allclose(t_means[0].numpy(), means, rtol=1e-12)
    assert_allclose(t_cov[0].numpy(), cov, rtol=1e-10, atol=1e-12)
    assert_allclose(t_prec_chol[0].numpy(), prec_chol, rtol=1e-10)
    assert_allclose(t_log_prob[0].numpy(), log_prob, rtol=1e-10)
    precisions = precisions_from_cholesky(t_prec_chol, covariance_type)[0].numpy()
    if covariance_type in ("full", "tied"):
        assert_allclose(precisions, np.linalg.inv(cov), rtol=1e-8)
    else:
        assert_allclose(precisions, 1 / cov, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_batch_of_groups_equals_groups_one_by_one(covariance_type):
    problems = [_problem(seed) for seed in range(3)]
    X = torch.stack([torch.as_tensor(p[0]) for p in problems])
    resp = torch.stack([torch.as_tensor(p[1]) for p in problems])
    nk, means, cov = estimate_gaussian_parameters(X, resp, 1e-6, covariance_type)
    log_prob = estimate_log_gaussian_prob(
        X, means, compute_precision_cholesky(cov, covariance_type), covariance_type
    )
    for b, (Xb, resp_b) in enumerate(problems):
        nk_b, means_b, cov_b = estimate_gaussian_parameters(
            _t(Xb), _t(resp_b), 1e-6, covariance_type
        )
        assert_allclose(cov[b].numpy(), cov_b[0].numpy(), rtol=1e-12)
        prec_chol_b = compute_precision_cholesky(cov_b, covariance_type)
        log_prob_b = estimate_log_gaussian_prob(
            _t(Xb), means_b, prec_chol_b, covariance_type
        )
        assert_allclose(log_prob[b].numpy(), log_prob_b[0].numpy(), rtol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_zero_responsibility_excludes_pixels(covariance_type):
    X, resp = _problem(1)
    keep = np.arange(len(X)) % 3 != 0
    masked = resp * keep[:, None]
    params_masked = estimate_gaussian_parameters(
        _t(X), _t(masked), 1e-6, covariance_type
    )
    params_subset = estimate_gaussian_parameters(
        _t(X[keep]), _t(resp[keep]), 1e-6, covariance_type
    )
    for a, b in zip(params_masked, params_subset):
        assert_allclose(a.numpy(), b.numpy(), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_m_step_is_differentiable(covariance_type):
    X, resp = _problem(2)
    logits = torch.zeros(1, len(X), 4, dtype=torch.float64, requires_grad=True)
    resp_t = (logits + _t(np.log(resp))).softmax(-1)
    nk, means, cov = estimate_gaussian_parameters(_t(X), resp_t, 1e-6, covariance_type)
    prec_chol = compute_precision_cholesky(cov, covariance_type)
    log_prob = estimate_log_gaussian_prob(_t(X), means, prec_chol, covariance_type)
    nll = -torch.logsumexp(log_prob + (nk / nk.sum()).log().unsqueeze(1), -1).mean()
    nll.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_singular_covariance_raises_clear_error():
    X = np.zeros((10, 2))
    resp = np.ones((10, 1))
    _, _, cov = estimate_gaussian_parameters(_t(X), _t(resp), 0.0, "full")
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        compute_precision_cholesky(cov, "full")
