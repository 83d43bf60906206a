"""Fit as a transaction: a refit that fails or is interrupted at any stage
leaves the previous model exactly as it was; a failed first fit leaves an
unfitted estimator."""

import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture

import skdgmm._fitting
from skdgmm import DeepGaussianMixture
from skdgmm._fitting import TrainingDiverged, _better
from skdgmm._training import History

from .conftest import FAST, record_optimize


def _snapshot(model):
    """Everything the fitted model holds (its parameters aside), in
    comparable form: the network as its weights, the rest pickled."""
    state = {k: v for k, v in vars(model).items() if k not in model.get_params()}
    network = state.pop("network_", None)
    weights = {} if network is None else network.state_dict()
    return pickle.dumps(state), {k: v.clone() for k, v in weights.items()}


def _same(a, b):
    return (
        a[0] == b[0]
        and a[1].keys() == b[1].keys()
        and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    )


def _raise(error):
    def fail(*args, **kwargs):
        raise error

    return fail


# (where, what): the stages of a fit, each made to fail
_STAGES = [
    ("sklearn.mixture.GaussianMixture.fit", RuntimeError("initial EM")),
    ("torch.optim.AdamW.step", RuntimeError("training")),
    ("torch.optim.AdamW.step", MemoryError()),
    ("skdgmm._fitting.fitted_mixture", KeyboardInterrupt()),
    ("skdgmm._fitting._m_step", KeyboardInterrupt()),
    ("skdgmm._fitting._m_step", MemoryError()),
    ("skdgmm.mixture.fitted_attributes", RuntimeError("assignment")),
]


@pytest.mark.parametrize("where, error", _STAGES)
def test_a_failed_refit_leaves_the_previous_model_as_it_was(
    images, monkeypatch, where, error
):
    X, _ = images
    model = DeepGaussianMixture(3, **FAST).fit(X)
    before, proba = _snapshot(model), model.predict_proba(X)
    monkeypatch.setattr(where, _raise(error))
    with pytest.raises(type(error)):
        # other data and settings, so that a partial refit would show
        model.set_params(n_components=2, random_state=1).fit(X[:2] * 10)
    monkeypatch.undo()
    assert _same(_snapshot(model), before)
    assert_array_equal(model.predict_proba(X), proba)


@pytest.mark.parametrize("where, error", _STAGES)
def test_a_failed_first_fit_leaves_an_unfitted_estimator(
    images, monkeypatch, where, error
):
    X, _ = images
    model = DeepGaussianMixture(3, **FAST)
    monkeypatch.setattr(where, _raise(error))
    with pytest.raises(type(error)):
        model.fit(X)
    monkeypatch.undo()
    assert not [name for name in vars(model) if name.endswith("_")]
    for method in (model.predict, model.predict_proba, model.score):
        with pytest.raises(NotFittedError):
            method(X)


def test_a_refit_on_bad_input_leaves_the_previous_model(images):
    X, _ = images
    model = DeepGaussianMixture(3, **FAST).fit(X)
    before = _snapshot(model)
    with pytest.raises(ValueError):
        model.fit(np.full_like(X, np.nan))
    with pytest.raises(ValueError):
        model.fit(X[..., None].repeat(2, -1), mask=np.ones(X.shape[1:], bool))
    assert _same(_snapshot(model), before)


def test_a_tabular_refit_on_images_drops_the_feature_names(rng):
    pd = pytest.importorskip("pandas")
    table = pd.DataFrame(rng.standard_normal((40, 1)), columns=["intensity"])
    model = DeepGaussianMixture(2, **FAST).fit(table)
    assert list(model.feature_names_in_) == ["intensity"]
    model.fit(rng.standard_normal((2, 8, 8)))
    assert not hasattr(model, "feature_names_in_")


def test_a_diverged_run_never_beats_a_finite_one():
    assert _better(math.nan, None)
    assert _better(-1.0, math.nan)
    assert not _better(math.nan, -1.0)
    assert _better(-0.5, -1.0) and not _better(-2.0, -1.0)


def test_n_init_keeps_the_finite_run_when_one_diverges(images, monkeypatch):
    X, _ = images
    fitted_mixture, calls = skdgmm._fitting.fitted_mixture, []

    def first_diverges(*args):
        calls.append(1)
        if len(calls) == 1:
            raise TrainingDiverged("diverged")
        return fitted_mixture(*args)

    monkeypatch.setattr(skdgmm._fitting, "fitted_mixture", first_diverges)
    model = DeepGaussianMixture(3, n_init=2, **FAST).fit(X)
    assert len(calls) == 2 and np.isfinite(model.lower_bound_)


def test_ctrl_c_after_a_diverged_run_is_an_interruption(images, monkeypatch):
    """With no finite run to keep, a Ctrl-C in the next initialization stops
    the fit as an interruption, not as a divergence."""
    X, _ = images
    initial_mixture, calls = skdgmm._fitting.initial_mixture, []

    def diverged(*args):
        raise TrainingDiverged("diverged")

    def interrupted_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return initial_mixture(*args)

    monkeypatch.setattr(skdgmm._fitting, "fitted_mixture", diverged)
    monkeypatch.setattr(skdgmm._fitting, "initial_mixture", interrupted_second)
    with pytest.raises(KeyboardInterrupt):
        DeepGaussianMixture(3, n_init=2, **FAST).fit(X)


@pytest.mark.parametrize("seed", range(6))
def test_n_init_keeps_the_run_of_the_highest_lower_bound(seed):
    """As GaussianMixture: more initializations never lower ``lower_bound_``
    (the first of several is the one a single initialization trains)."""
    X = np.random.default_rng(seed).random((2, 16, 16))
    params = dict(FAST, random_state=seed)
    single = DeepGaussianMixture(3, n_init=1, **params).fit(X)
    several = DeepGaussianMixture(3, n_init=3, **params).fit(X)
    assert several.lower_bound_ >= single.lower_bound_


def test_diverged_fixed_gaussians_raise_a_clear_error(images, monkeypatch):
    X, _ = images

    def diverged(network, batches, n_components):
        raise AssertionError("not reached")

    real_step = torch.optim.AdamW.step

    def poisoning_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(math.nan)
        return out

    model = DeepGaussianMixture(3, gaussians="fixed", **FAST).fit(X)
    before = _snapshot(model)
    monkeypatch.setattr(torch.optim.AdamW, "step", poisoning_step)
    with pytest.raises(ValueError, match="diverged"):
        model.fit(X)
    assert _same(_snapshot(model), before)


def test_warm_start_with_another_covariance_type_is_refused(images):
    X, _ = images
    model = DeepGaussianMixture(3, warm_start=True, **FAST).fit(X)
    with pytest.raises(ValueError, match="covariance_type is 'full'.*now 'diag'"):
        model.set_params(covariance_type="diag").fit(X)
    with pytest.raises(ValueError, match="n_components is 3.*now 2"):
        model.set_params(covariance_type="full", n_components=2).fit(X)


@pytest.mark.parametrize("max_iter", [1, 2])
def test_warm_start_converges_over_several_fits(rng, max_iter):
    X = np.r_[rng.standard_normal((80, 2)), rng.standard_normal((80, 2)) + 5]
    model = DeepGaussianMixture(
        2, warm_start=True, max_iter=max_iter, random_state=0, device="cpu"
    )
    for _ in range(300):
        model.fit(X)
        if model.converged_:
            break
    assert model.converged_
    assert model.n_iter_ <= max_iter


@pytest.mark.parametrize("seed", [0, 1])
def test_warm_starts_of_one_iteration_are_one_fit_of_two(seed):
    """As scikit-learn's test_warm_start: two warm fits of one iteration
    give the Gaussians of one fit of two and a higher score. The second
    went on at the full learning rate where the first had ended within the
    warm-up (weights 0.445 / 0.555 against 0.463 / 0.537 at seed 0)."""
    X = np.random.RandomState(seed).rand(500, 2)
    params = dict(n_components=2, reg_covar=0, random_state=seed, device="cpu")
    cold = DeepGaussianMixture(max_iter=2, **params).fit(X)
    warm = DeepGaussianMixture(max_iter=1, warm_start=True, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = warm.fit(X).score(X)
        second = warm.fit(X).score(X)
    for name in ("weights_", "means_", "precisions_"):
        assert_allclose(getattr(warm, name), getattr(cold, name), rtol=1e-6)
    assert second > first


def test_warm_starts_never_lower_the_likelihood(rng):
    """As scikit-learn's test_monotonic_likelihood: one iteration per fit,
    a score that never falls, and convergence within the calls."""
    X = np.r_[
        rng.standard_normal((60, 2)),
        rng.standard_normal((60, 2)) + 4,
        rng.standard_normal((60, 2)) - 4,
    ]
    model = DeepGaussianMixture(
        3, warm_start=True, max_iter=1, tol=1e-7, random_state=0, device="cpu"
    )
    previous = -np.inf
    for _ in range(300):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X)
        score = model.score(X)
        assert score >= previous
        previous = score
        if model.converged_:
            break
    assert model.converged_


def test_a_warm_start_that_lowers_the_likelihood_keeps_the_model(
    rng, capsys, monkeypatch
):
    X = np.r_[rng.standard_normal((80, 2)), rng.standard_normal((80, 2)) + 5]
    model = DeepGaussianMixture(2, warm_start=True, **FAST).fit(X)
    labels, means, score = model.predict(X), model.means_, model.score(X)

    def scrambled(network, *args, **kwargs):
        # training that ends far worse than it started
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.normal_(generator=torch.Generator().manual_seed(0))
        return History(losses=[1.0], log_likelihoods=[-10.0])

    monkeypatch.setattr(skdgmm._fitting, "optimize", scrambled)
    model.set_params(verbose=1).fit(X)
    assert "keeping that model (converged)" in capsys.readouterr().out
    assert model.converged_ and model.n_iter_ == 0
    assert_array_equal(model.predict(X), labels)
    np.testing.assert_allclose(model.means_, means)
    assert model.score(X) == pytest.approx(score)


def test_max_iter_zero_returns_the_initialization(rng):
    X = np.r_[rng.standard_normal((80, 2)), rng.standard_normal((80, 2)) + 5] * 5
    means_init = [[20.0, 30.0], [30.0, 25.0]]
    model = DeepGaussianMixture(
        2, means_init=means_init, max_iter=0, random_state=0, device="cpu"
    ).fit(X)
    reference = GaussianMixture(
        2, means_init=means_init, max_iter=0, random_state=0
    ).fit(X)
    np.testing.assert_allclose(model.means_, means_init)
    np.testing.assert_allclose(model.weights_, reference.weights_, rtol=1e-6)
    np.testing.assert_allclose(model.covariances_, reference.covariances_, rtol=1e-6)


@pytest.mark.parametrize("where, error", _STAGES[1:])
def test_a_failed_warm_start_leaves_the_previous_model_as_it_was(
    images, monkeypatch, where, error
):
    X, _ = images
    model = DeepGaussianMixture(3, warm_start=True, **FAST).fit(X)
    before = _snapshot(model)
    optimizer = {
        (k, n): v.clone()
        for k, state in model._history.optimizer_state["state"].items()
        for n, v in state.items()
    }
    monkeypatch.setattr(where, _raise(error))
    with pytest.raises(type(error)):
        model.fit(X)
    monkeypatch.undo()
    assert _same(_snapshot(model), before)
    # AdamW's state, which a warm start resumes, is a copy
    after = model._history.optimizer_state["state"]
    assert all(torch.equal(after[k][n], v) for (k, n), v in optimizer.items())


def test_warm_start_on_tabular_data_ignores_rescale_intensity(rng, monkeypatch):
    X = rng.standard_normal((60, 2))
    model = DeepGaussianMixture(2, warm_start=True, rescale_intensity=True, **FAST)
    model.fit(X)
    calls = record_optimize(monkeypatch)
    model.fit(X)
    # the second fit trained on from the first (its likelihood can then be
    # lower: the earlier model is then kept, see
    # test_a_warm_start_that_lowers_the_likelihood_keeps_the_model)
    assert calls and calls[0]["previous"].optimizer_state is not None
