"""Inference adapted to each new image (``adapt_iter``): EM on its pixels,
or a copy of the network fine-tuned on it."""

import copy
import dataclasses

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

import skdgmm._fitting
from skdgmm import DeepGaussianMixture
from skdgmm._adaptation import PRIOR_POWER, adapt_responsibilities
from skdgmm._data import Batch

from .conftest import FAST, interrupt_step


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


@pytest.mark.parametrize("adapt_method", ["em", "network"])
def test_scores_and_tables_are_not_adapted(images, rng, adapt_method):
    X, _ = images
    model = DeepGaussianMixture(
        3, spatially_variant=True, adapt_method=adapt_method, **FAST
    ).fit(X)
    score, samples = model.score(X), model.score_samples(X)
    model.set_params(adapt_iter=3)
    assert model.score(X) == score
    assert_array_equal(model.score_samples(X), samples)
    # a row's label never depends on the other rows of the call
    table = np.r_[rng.normal(0, 1, (60, 2)), rng.normal(4, 1, (60, 2))]
    tabular = DeepGaussianMixture(
        2, adapt_iter=5, adapt_method=adapt_method, **FAST
    ).fit(table)
    assert_array_equal(tabular.predict(table[:3]), tabular.predict(table)[:3])
    assert_allclose(tabular.predict_proba(table[:3]), tabular.predict_proba(table)[:3])


def _fine_tuned_copy(model, X, mask, n_iter):
    """The labels of X by a copy of ``model`` warm-started on X alone."""
    tuned = copy.deepcopy(model).set_params(
        warm_start=True, max_iter=n_iter, adapt_iter=0
    )
    return tuned.fit(X, mask=mask).predict(X, mask=mask), tuned


@pytest.mark.parametrize(
    "masked, rescaled", [(False, False), (True, False), (True, True)]
)
def test_network_adaptation_labels_each_image_by_its_fine_tuned_copy(
    images, masked, rescaled
):
    """``adapt_method="network"`` is the user guide's warm start of a copy
    on each image alone (each mapped by its own intensity rescaling, where
    the model rescales), and leaves the fitted model as it was."""
    X, _ = images
    mask = np.ones(X.shape, bool) if masked else None
    if masked:
        mask[:, :3] = False
    if rescaled:
        X = X * np.array([1.0, 3.0, 0.5])[:, None, None] + [[[0.0]], [[2.0]], [[-1.0]]]
    model = DeepGaussianMixture(3, rescale_intensity=rescaled, **FAST).fit(X[:2])
    assert (model._intensity_rescaling is not None) == rescaled
    weights = {k: v.clone() for k, v in model.network_.state_dict().items()}
    means, plain = model.means_.copy(), model.predict(X, mask=mask)
    model.set_params(adapt_iter=3, adapt_method="network")
    labels = model.predict(X, mask=mask)
    resp = model.predict_proba(X, mask=mask)
    for i in range(len(X)):
        image = slice(i, i + 1)
        expected, tuned = _fine_tuned_copy(
            model, X[image], None if mask is None else mask[image], 3
        )
        assert_array_equal(labels[image], expected)
        changed = tuned.network_.state_dict()
        assert not all(torch.equal(weights[k], changed[k]) for k in weights)
    # an image's labels do not depend on the other images of the call
    assert_array_equal(
        model.predict(X[2:], mask=None if mask is None else mask[2:]), labels[2:]
    )
    inside = slice(None) if mask is None else mask
    assert_array_equal(resp.argmax(-1)[inside], labels[inside])
    assert_allclose(resp.sum(-1)[inside], 1.0, rtol=1e-5)
    # the fitted model: its network, Gaussians and plain labels as they were
    state = model.network_.state_dict()
    assert all(torch.equal(weights[k], state[k]) for k in weights)
    assert_array_equal(model.means_, means)
    assert_array_equal(model.set_params(adapt_iter=0).predict(X, mask=mask), plain)


def test_an_interrupted_network_adaptation_stops_the_labelling(images, monkeypatch):
    X, _ = images
    model = DeepGaussianMixture(3, **FAST).fit(X[:2])
    model.set_params(adapt_iter=3, adapt_method="network")
    interrupt_step(monkeypatch, at=2)
    with pytest.raises(KeyboardInterrupt):
        model.predict(X)


def test_network_adaptation_leaves_a_random_state_of_the_model_alone(images):
    """Fine-tuning draws patches from the model's random_state: a copy of
    it, so that predict neither moves it nor depends on earlier calls."""
    X, _ = images
    model = DeepGaussianMixture(
        3, patch_pixels=64, **{**FAST, "random_state": np.random.RandomState(0)}
    ).fit(X[:2])
    model.set_params(adapt_iter=3, adapt_method="network")
    state = model.random_state.get_state()[1].copy()
    labels = model.predict(X)
    assert_array_equal(model.random_state.get_state()[1], state)
    assert_array_equal(model.predict(X), labels)
    assert_array_equal(model.predict(X[2:]), labels[2:])


def test_network_adaptation_of_an_image_without_mask_pixels(images):
    X, _ = images
    mask = np.ones(X.shape, bool)
    mask[1] = False
    model = DeepGaussianMixture(3, adapt_iter=3, adapt_method="network", **FAST)
    model.fit(X[:1])
    labels = model.predict(X, mask=mask)
    assert (labels[1] == -1).all()
    assert_array_equal(labels[[0, 2]], model.predict(X[[0, 2]]))
    assert_allclose(model.predict_proba(X, mask=mask)[1], 0.0)


def test_network_adaptation_stops_on_ctrl_c_where_the_fit_is_kept(images, monkeypatch):
    """An interrupted fine-tuning whose copy is refused (its likelihood
    below the fitted network's) still stops the labelling."""
    X, _ = images
    model = DeepGaussianMixture(3, adapt_iter=3, adapt_method="network", **FAST)
    model.fit(X[:2])
    fitted_mixture, calls = skdgmm._fitting.fitted_mixture, []

    def start_is_better(*args):
        # the second call of a warm start weighs the model it continued
        calls.append(1)
        mixture = fitted_mixture(*args)
        if len(calls) % 2 == 0:
            mixture = dataclasses.replace(mixture, log_likelihood=np.inf)
        return mixture

    monkeypatch.setattr(skdgmm._fitting, "fitted_mixture", start_is_better)
    model.predict(X[2:])  # refused copies: the fitted network labels
    interrupt_step(monkeypatch, at=2)
    with pytest.raises(KeyboardInterrupt):
        model.predict(X[2:])


def test_network_adaptation_needs_the_fitted_settings(images):
    X, _ = images
    model = DeepGaussianMixture(3, **FAST).fit(X[:2])
    model.set_params(adapt_iter=3, adapt_method="network", covariance_type="diag")
    with pytest.raises(ValueError, match="covariance_type is now 'diag'"):
        model.predict(X)
    assert model.set_params(adapt_method="em").predict(X).shape == X.shape


def test_the_user_guide_recipe_fine_tunes_a_copy(images):
    """A warm start of a copy on one new image trains it, and leaves the
    model as it was."""
    X, _ = images
    model = DeepGaussianMixture(3, **FAST).fit(X[:2])
    weights = {k: v.clone() for k, v in model.network_.state_dict().items()}
    labels, tuned = _fine_tuned_copy(model, X[2:], None, 3)
    assert labels.shape == X[2:].shape
    assert tuned.n_iter_ <= 3 and len(tuned.loss_curve_) > len(model.loss_curve_)
    state = model.network_.state_dict()
    assert all(torch.equal(weights[k], state[k]) for k in weights)
