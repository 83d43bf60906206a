"""Inference adapted to each new image (``adapt_iter``, or a copy of the
network fine-tuned on it)."""

import copy

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.mixture._gaussian_mixture import (
    _compute_precision_cholesky,
    _estimate_gaussian_parameters,
    _estimate_log_gaussian_prob,
)

from skdgmm import DeepGaussianMixture
from skdgmm._adaptation import PRIOR_POWER, adapt_responsibilities
from skdgmm._data import Batch

from .conftest import FAST


def _reference(resp, pixels, n_iter, reg_covar, covariance_type):
    """The adapted responsibilities of one image's pixels, with
    scikit-learn's M-step and Gaussian log-densities."""
    log_prior = PRIOR_POWER * np.log(resp)
    posterior = resp
    for _ in range(n_iter):
        nk, means, covariances = _estimate_gaussian_parameters(
            pixels, posterior, reg_covar, covariance_type
        )
        log_prob = _estimate_log_gaussian_prob(
            pixels,
            means,
            _compute_precision_cholesky(covariances, covariance_type),
            covariance_type,
        )
        log_post = log_prob + np.log(nk / nk.sum()) + log_prior
        log_post -= log_post.max(1, keepdims=True)
        posterior = np.exp(log_post) / np.exp(log_post).sum(1, keepdims=True)
    return posterior


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_the_em_of_each_image_as_scikit_learn_computes_it(covariance_type, rng):
    n_images, n_channels, n_components, shape = 2, 2, 3, (6, 5)
    x = torch.tensor(rng.normal(size=(n_images, n_channels, *shape)))
    logits = torch.tensor(rng.normal(size=(n_images, n_components, *shape)))
    resp = logits.softmax(1)
    mask = torch.ones((n_images, *shape), dtype=torch.float64)
    mask[1, :2] = 0.0  # the second image's mask leaves out two rows
    batch = Batch(x, x, mask, slice(None), ())
    adapted = adapt_responsibilities(resp, batch, 3, 1e-3, covariance_type)
    assert adapted.shape == resp.shape
    for i in range(n_images):
        inside = mask[i].bool()
        pixels = x[i].movedim(0, -1)[inside].numpy()
        prior = resp[i].movedim(0, -1)[inside].numpy()
        expected = _reference(prior, pixels, 3, 1e-3, covariance_type)
        assert_allclose(adapted[i].movedim(0, -1)[inside].numpy(), expected, atol=1e-8)
        # outside the mask, the network's responsibilities
        outside = ~inside
        assert_array_equal(
            adapted[i].movedim(0, -1)[outside], resp[i].movedim(0, -1)[outside]
        )


def test_predict_is_the_argmax_of_predict_proba_and_the_model_stays(images):
    X, _ = images
    mask = np.zeros(X.shape, dtype=bool)
    mask[:, 4:28, 2:30] = True
    model = DeepGaussianMixture(3, **FAST).fit(X[:3], mask=mask[:3])
    before = {k: v.clone() for k, v in model.network_.state_dict().items()}
    means, score = model.means_.copy(), model.score(X, mask=mask)
    plain = model.predict(X, mask=mask)
    model.set_params(adapt_iter=5)
    labels = model.predict(X, mask=mask)
    proba = model.predict_proba(X, mask=mask)
    assert_array_equal(labels[mask], proba.argmax(-1)[mask])
    assert (labels[~mask] == -1).all() and (proba[~mask] == 0).all()
    assert_allclose(proba[mask].sum(-1), 1.0, atol=1e-5)
    assert (labels != plain).any()  # the images' own Gaussians have a say
    assert_array_equal(model.means_, means)
    assert model.score(X, mask=mask) == score
    after = model.network_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_images_own_clusters_overrule_a_confident_wrong_network(rng):
    """Two well separated clusters of pixels; the network gives a tenth of
    each cluster to the other component with probability 0.999. Its prior,
    to the power 1/4, is worth about 1.7 nats there: the image's own
    Gaussians overrule it, and keep the rest as it was."""
    n = 200
    pixels = np.r_[rng.normal(0.0, 0.3, n), rng.normal(5.0, 0.3, n)]
    truth = np.repeat([0, 1], n)
    wrong = rng.rand(2 * n) < 0.1
    given = np.where(wrong, 1 - truth, truth)
    resp = np.where(given[:, None] == [0, 1], 0.999, 0.001)
    x = torch.tensor(pixels).reshape(1, 1, 2 * n, 1)
    batch = Batch(x, x, torch.ones(1, 2 * n, 1, dtype=torch.float64), 0, ())
    resp = torch.tensor(resp.T).reshape(1, 2, 2 * n, 1)
    adapted = adapt_responsibilities(resp, batch, 5, 1e-6, "full")
    assert_array_equal(resp.argmax(1).ravel().numpy(), given)
    assert_array_equal(adapted.argmax(1).ravel().numpy(), truth)


def test_an_unfitted_model_says_so(images):
    X, _ = images
    with pytest.raises(NotFittedError):
        DeepGaussianMixture(3, adapt_iter=3).predict(X)


def test_scores_and_tables_are_not_adapted(images, rng):
    X, _ = images
    model = DeepGaussianMixture(3, spatially_variant=True, **FAST).fit(X)
    score, samples = model.score(X), model.score_samples(X)
    model.set_params(adapt_iter=3)
    assert model.score(X) == score
    assert_array_equal(model.score_samples(X), samples)
    # a row's label never depends on the other rows of the call
    table = np.r_[rng.normal(0, 1, (60, 2)), rng.normal(4, 1, (60, 2))]
    tabular = DeepGaussianMixture(2, adapt_iter=5, **FAST).fit(table)
    assert_array_equal(tabular.predict(table[:3]), tabular.predict(table)[:3])
    assert_allclose(tabular.predict_proba(table[:3]), tabular.predict_proba(table)[:3])


def test_a_copy_fine_tuned_on_one_new_image_leaves_the_model_as_it_was(images):
    """The user guide's recipe: a warm start of a copy on one new image."""
    X, _ = images
    model = DeepGaussianMixture(3, **FAST).fit(X[:2])
    weights = {k: v.clone() for k, v in model.network_.state_dict().items()}
    means, labels = model.means_.copy(), model.predict(X[2:])
    tuned = copy.deepcopy(model).set_params(
        warm_start=True, max_iter=3, runtime="torch"
    )
    tuned_labels = tuned.fit(X[2:]).predict(X[2:])
    assert tuned_labels.shape == X[2:].shape
    assert tuned.n_iter_ <= 3 and len(tuned.loss_curve_) > len(model.loss_curve_)
    changed = tuned.network_.state_dict()
    assert not all(torch.equal(weights[k], changed[k]) for k in weights)
    # the fitted model: its network, Gaussians and labels as they were
    state = model.network_.state_dict()
    assert all(torch.equal(weights[k], state[k]) for k in weights)
    assert_array_equal(model.means_, means)
    assert_array_equal(model.predict(X[2:]), labels)
