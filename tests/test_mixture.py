"""DeepGaussianMixture: layouts, masks, invariances, state and reproducibility."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skdgmm import DeepGaussianMixture, SpatialFeatures
from skdgmm._training import WARMUP_STEPS
from skdgmm.datasets import make_segmentation_images
from skdgmm.metrics import bic_scorer

from .conftest import FAST, interrupt_step

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def _model(n_components=3, **params):
    return DeepGaussianMixture(n_components, **{**FAST, **params})


LAYOUTS = [
    # X shape, spatial_dims, label shape
    ((40, 2), 2, (40,)),
    ((2, 9, 11), 2, (2, 9, 11)),
    ((2, 9, 11, 3), 2, (2, 9, 11)),
    ((2, 5, 6, 7), 3, (2, 5, 6, 7)),
    ((2, 5, 6, 7, 2), 3, (2, 5, 6, 7)),
]


@pytest.mark.parametrize("shape, spatial_dims, label_shape", LAYOUTS)
def test_every_layout_gives_outputs_shaped_like_input(
    rng, shape, spatial_dims, label_shape
):
    X = rng.standard_normal(shape)
    model = _model(2, spatial_dims=spatial_dims).fit(X)
    n_channels = shape[-1] if len(shape) in (2, spatial_dims + 2) else 1
    assert model.n_features_in_ == n_channels
    assert model.means_.shape == (2, n_channels)
    assert model.predict(X).shape == label_shape
    assert model.predict_proba(X).shape == label_shape + (2,)
    assert model.score_samples(X).shape == label_shape
    assert np.isfinite(model.score(X))
    assert_allclose(model.predict_proba(X).sum(-1), 1.0)
    assert_array_equal(model.fit_predict(X), model.predict(X))


@pytest.mark.parametrize("shape, spatial_dims, label_shape", LAYOUTS)
def test_mask_excludes_pixels(rng, shape, spatial_dims, label_shape):
    X = rng.standard_normal(shape)
    mask = rng.uniform(size=label_shape) < 0.6
    model = _model(2, spatial_dims=spatial_dims).fit(X, mask=mask)
    labels = model.predict(X, mask=mask)
    assert (labels[~mask] == -1).all() and (labels[mask] >= 0).all()
    proba = model.predict_proba(X, mask=mask)
    assert (proba[~mask] == 0).all()
    assert_allclose(proba[mask].sum(-1), 1.0)
    scores = model.score_samples(X, mask=mask)
    assert (scores[~mask] == 0).all()
    assert model.score(X, mask=mask) == pytest.approx(scores[mask].mean())


def test_fitted_parameters_ignore_pixels_outside_the_mask(images):
    X, labels = images
    mask = labels > 0
    noisy = X.copy()
    noisy[~mask] = 1000.0  # would dominate the means if it were counted
    model = _model(2, max_iter=0).fit(noisy, mask=mask)
    assert model.means_.max() < 10


def test_mask_validation(images):
    X, _ = images
    with pytest.raises(ValueError, match="mask must have shape"):
        _model().fit(X, mask=np.ones(X.shape[1:], bool))
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        _model().fit(X, mask=np.full(X.shape, 0.5))
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        _model().fit(X, mask=np.zeros(X.shape, bool))


def test_channel_and_layout_mismatch_raise(rng):
    X = rng.standard_normal((2, 8, 8, 3))
    model = _model(2).fit(X)
    with pytest.raises(ValueError, match="X has 2 channels, but .* expecting 3"):
        model.predict(X[..., :2])
    with pytest.raises(ValueError, match="fitted on 2-D images"):
        model.predict(X[0, 0])
    with pytest.raises(ValueError, match="spatial_dims=2"):
        model.predict(X[None])


def test_parameters_are_in_input_units(images):
    X, _ = images
    base = _model(max_iter=0).fit(X)
    scaled = _model(max_iter=0).fit(1000 * X + 50)
    assert_allclose(scaled.means_, 1000 * base.means_ + 50, rtol=1e-4)
    assert_allclose(scaled.covariances_, 1e6 * base.covariances_, rtol=1e-3)
    assert_allclose(scaled.precisions_, np.linalg.inv(scaled.covariances_), rtol=1e-6)


@pytest.mark.parametrize("gaussians", ["bounded", "free", "fixed"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_tabular_limit_matches_gaussian_mixture(covariance_type, gaussians, rng):
    X = np.r_[rng.standard_normal((60, 2)), rng.standard_normal((60, 2)) + [6, 3]]
    gm = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X)
    model = _model(
        2,
        covariance_type=covariance_type,
        gaussians=gaussians,
        max_iter=100,
        network_width=16,
    )
    model.fit(X)
    assert adjusted_rand_score(gm.predict(X), model.predict(X)) == 1.0
    assert model.score(X) == pytest.approx(gm.score(X), abs=2e-3)
    assert model.lower_bound_ == pytest.approx(gm.lower_bound_, abs=2e-3)
    # Gaussians estimated from the network's responsibilities by gradient
    # steps: close to EM's fixed point, not on it
    atol = 1e-2 if gaussians == "fixed" else 2e-2
    assert_allclose(model.score_samples(X), gm.score_samples(X), atol=atol)
    order = np.argsort(model.means_[:, 0]), np.argsort(gm.means_[:, 0])
    assert_allclose(model.means_[order[0]], gm.means_[order[1]], atol=1e-2)
    assert_allclose(model.weights_[order[0]], gm.weights_[order[1]], atol=1e-2)
    assert model.covariances_.shape == gm.covariances_.shape
    assert model.precisions_cholesky_.shape == gm.precisions_cholesky_.shape


@pytest.mark.parametrize("masked", [False, True])
def test_images_one_by_one_equal_images_together(images, masked):
    X, labels = images
    mask = (labels > 0) if masked else None

    def one_by_one(method):
        return np.concatenate(
            [
                getattr(model, method)(
                    X[i : i + 1], mask=None if mask is None else mask[i : i + 1]
                )
                for i in range(len(X))
            ]
        )

    model = _model(3, spatially_variant=True).fit(X, mask=mask)
    together = model.predict_proba(X, mask=mask)
    assert_allclose(together, one_by_one("predict_proba"), atol=1e-6)
    assert_allclose(
        model.score_samples(X, mask=mask), one_by_one("score_samples"), atol=1e-5
    )
    model.set_params(batch_size=2)
    assert_allclose(model.predict_proba(X, mask=mask), together, atol=1e-6)


@pytest.mark.parametrize("spatially_variant", [False, True])
def test_tabular_rows_are_independent(rng, spatially_variant):
    X = np.r_[
        rng.standard_normal((50, 2)),
        rng.standard_normal((50, 2)) + 4,
        rng.standard_normal((50, 2)) - 4,
    ]
    model = _model(3, spatially_variant=spatially_variant).fit(X)
    for method in ("predict", "predict_proba", "score_samples"):
        full = getattr(model, method)(X)
        subset = getattr(model, method)(X[10:20])
        permuted = getattr(model, method)(X[::-1])
        assert_allclose(full[10:20], subset, atol=1e-9)
        assert_allclose(full[::-1], permuted, atol=1e-9)


def test_same_random_state_gives_identical_results(images):
    X, _ = images
    first = _model(3, init_params="random").fit(X)
    second = _model(3, init_params="random").fit(X)
    assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    assert_array_equal(first.means_, second.means_)
    assert first.loss_curve_ == second.loss_curve_


def test_fit_leaves_global_random_state_and_input_alone(images):
    X, _ = images
    X.setflags(write=False)
    original = X.copy()
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()
    _model(3, init_params="k-means++").fit(X).predict(X)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()
    assert_array_equal(X, original)


def test_pickle_round_trip(images):
    X, _ = images
    model = _model(3).fit(X)
    clone = pickle.loads(pickle.dumps(model))
    assert_array_equal(clone.predict_proba(X), model.predict_proba(X))
    assert_array_equal(clone.score_samples(X), model.score_samples(X))


def test_warm_start_continues_training(images):
    X, _ = images
    # a short pre-training: the first steps of training lower the loss
    model = _model(3, warm_start=True, max_iter=2, tol=0, init_iter=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
        network = model.network_
        first_curve = model.loss_curve_
        model.fit(X)
    assert model.network_ is not network
    # continuing, not restarting: the curve goes on where the first ended
    assert model.loss_curve_[:2] == first_curve
    assert len(model.loss_curve_) == 4 and model.n_iter_ == 2
    assert model.loss_curve_[2] < first_curve[0]


def test_n_init_keeps_the_best_run(images):
    X, _ = images
    # deepSVG without the Potts term: the loss that selects the run is the
    # negated lower bound
    params = dict(
        init_params="random",
        init_iter=2,
        max_iter=3,
        tol=0,
        spatial_regularization=0,
        spatially_variant=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        single = _model(3, **params).fit(X)
        several = _model(3, n_init=4, **params).fit(X)
    assert several.lower_bound_ >= single.lower_bound_ - 1e-6


def test_convergence_warning_and_attributes(images):
    X, _ = images
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        model = _model(3, max_iter=1, tol=0).fit(X)
    assert not model.converged_ and model.n_iter_ == 1
    assert len(model.lower_bounds_) == len(model.loss_curve_) == 1
    # the change is averaged over five iterations (six iterations at least),
    # and training does not stop while the learning rate warms up (one step
    # per iteration here)
    model = _model(3, max_iter=50, tol=10.0).fit(X)
    assert model.converged_ and model.n_iter_ == max(6, WARMUP_STEPS)


def test_keyboard_interrupt_keeps_a_usable_model(images, monkeypatch):
    X, _ = images
    # two pre-training steps, two training steps, then Ctrl-C
    interrupt_step(monkeypatch, at=5)
    with pytest.warns(UserWarning, match="interrupted"):
        model = _model(3, init_iter=2, max_iter=50, tol=0, n_init=3).fit(X)
    assert not model.converged_ and model.n_iter_ == 2
    assert len(model.lower_bounds_) == 2 and np.isfinite(model.lower_bounds_).all()
    assert model.predict(X).shape == X.shape
    # during pre-training: no training history, still a usable model
    monkeypatch.undo()
    interrupt_step(monkeypatch, at=2)
    with pytest.warns(UserWarning, match="interrupted"):
        model = _model(3, init_iter=5).fit(X)
    assert model.n_iter_ == 0 and model.lower_bounds_ == [] and model.loss_curve_ == []
    assert model.predict(X).shape == X.shape
    monkeypatch.undo()
    assert _model(3).fit(X).predict(X).shape == X.shape


def test_lower_bound_is_in_input_units(images):
    X, _ = images
    # with the Gaussians kept at EM, the loss's likelihood is score's
    model = _model(3).fit(1000 * X[:1] + 50)
    assert model.lower_bound_ == pytest.approx(model.score(1000 * X[:1] + 50), abs=1e-3)


def test_training_curves_are_python_floats_in_input_units(images):
    X, _ = images
    # deepSVG without regularisation: its loss is the negative log-likelihood
    model = _model(3, spatially_variant=True, spatial_regularization=0.0, tol=0.0)
    model.fit(1000 * X + 50)
    assert len(model.loss_curve_) == len(model.lower_bounds_) == FAST["max_iter"]
    # not np.float64 (the HTML repr showed them as such)
    assert all(type(value) is float for value in model.lower_bounds_)
    assert all(type(value) is float for value in model.loss_curve_)
    # the loss was in the network's units, the log-likelihood in the input's
    assert_allclose(model.loss_curve_, -np.array(model.lower_bounds_), rtol=1e-9)


FITTED_ARRAYS = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tabular", [False, True])
def test_fitted_gaussians_and_scores_keep_the_dtype_of_the_input(
    images, covariance_type, dtype, tabular
):
    X, _ = images
    X = np.stack([X, X**2], -1).astype(dtype)
    if tabular:
        X = X.reshape(-1, 2)
    model = _model(3, covariance_type=covariance_type, max_iter=2, init_iter=2).fit(X)
    # as GaussianMixture's
    pixels = X.reshape(-1, 2)
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(pixels)
    for name in FITTED_ARRAYS:
        assert getattr(model, name).dtype == getattr(gm, name).dtype == dtype, name
    assert model.score_samples(X).dtype == gm.score_samples(pixels).dtype == dtype
    assert isinstance(model.score(X), float) and isinstance(model.lower_bound_, float)
    # the other dtype: promoted, as GaussianMixture does
    other = X.astype(np.float64 if dtype == np.float32 else np.float32)
    assert (
        model.score_samples(other).dtype == gm.score_samples(other.reshape(-1, 2)).dtype
    )
    assert_allclose(model.score_samples(other), model.score_samples(X), rtol=1e-4)


def test_an_image_without_masked_pixels_is_left_out(images):
    X, labels = images
    mask = labels > 0
    mask[1] = False
    model = _model(2, batch_size=3).fit(X, mask=mask)
    assert np.isfinite(model.loss_curve_).all() and np.isfinite(model.means_).all()
    assert (model.predict(X, mask=mask)[1] == -1).all()


def test_warm_start_rejects_another_problem(images, rng):
    X, _ = images
    model = _model(3, warm_start=True).fit(X)
    labels = model.predict(X)
    with pytest.raises(ValueError, match="channels"):
        model.fit(np.stack([X, X], axis=-1))
    with pytest.raises(ValueError, match="fitted on 2-D images"):
        model.fit(rng.standard_normal((30, 1)))
    with pytest.raises(ValueError, match="n_components is now 2"):
        model.set_params(n_components=2).fit(X)
    assert_array_equal(model.set_params(n_components=3).predict(X), labels)


def test_mean_regularization_pulls_means_to_means_init(images):
    X, _ = images
    target = np.array([[0.2], [1.0], [1.8]])
    # the Gaussians must follow the network for the means to move at all
    params = dict(means_init=target, max_iter=30, tol=0, init_iter=0, gaussians="free")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        free = _model(3, **params).fit(X)
        tied = _model(3, mean_regularization=10.0, **params).fit(X)
    distance = lambda m: np.abs(m.means_ - target).sum()
    assert distance(tied) < distance(free)


def test_initial_parameters_are_validated(images):
    X, _ = images
    with pytest.raises(ValueError, match=r"means_init should have the shape \(3, 1\)"):
        _model(3, means_init=np.zeros((2, 1))).fit(X)
    with pytest.raises(
        ValueError, match=r"precisions_init should have the shape \(3, 1, 1\)"
    ):
        _model(3, precisions_init=np.ones(3)).fit(X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_bic_aic(images, covariance_type):
    X, _ = images
    model = _model(3, covariance_type=covariance_type).fit(X)
    samples, labels = model.sample(50)
    assert samples.shape == (50, 1) and labels.shape == (50,)
    n_pixels = X.size
    assert model.bic(X) - model.aic(X) == pytest.approx(
        model._n_parameters() * (np.log(n_pixels) - 2)
    )


def test_dtypes_and_device(images):
    X, _ = images
    for data in (X.astype(np.float32), (X * 50).astype(np.uint8)):
        model = _model(3).fit(data)
        assert model.predict(data).dtype.kind == "i"
    model = DeepGaussianMixture(2, max_iter=1, init_iter=1, network_width=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    assert model.device == "auto" and model.device_.type in ("cpu", "cuda", "mps")
    assert next(model.network_.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        _model(2, device="not-a-device").fit(X)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' is not available"):
            _model(2, device="cuda").fit(X)


def test_verbose_prints_progress(images, capsys):
    X, _ = images
    _model(3, verbose=2, verbose_interval=1, max_iter=2, tol=0).fit(X)
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "Iteration 1" in out and "lower bound" in out


def test_verbose_1_shows_a_progress_bar(images, capsys):
    X, _ = images
    _model(3, verbose=1, max_iter=3, tol=0).fit(X)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Initialization 0" in captured.err and "3/3" in captured.err
    assert "loss=" in captured.err


def test_recovers_synthetic_segmentation():
    X, labels = make_segmentation_images(4, (32, 32), noise=0.3, random_state=1)
    model = DeepGaussianMixture(
        3, random_state=0, device="cpu", network_width=8, network_depth=2
    )
    ari = adjusted_rand_score(labels.ravel(), model.fit_predict(X).ravel())
    assert ari > 0.9


def test_grid_search_picks_the_true_number_of_components():
    X, _ = make_segmentation_images(
        6, (24, 24), n_classes=3, noise=0.15, random_state=2
    )
    # the fitted Gaussians come from the network's responsibilities: the
    # network needs its default size to model the classes
    search = GridSearchCV(
        DeepGaussianMixture(1, random_state=0, device="cpu"),
        {"n_components": [1, 2, 3, 4]},
        scoring=bic_scorer,
        cv=2,
    ).fit(X)
    assert search.best_params_ == {"n_components": 3}


def test_grid_search_through_a_pipeline_in_parallel():
    X, _ = make_segmentation_images(6, (16, 16), noise=0.4, random_state=0)
    pipe = make_pipeline(
        SpatialFeatures(sigmas=(1.0,), local_std=False, edges=False),
        _model(1, max_iter=3),
    )

    def search(n_jobs):
        return GridSearchCV(
            pipe,
            {"deepgaussianmixture__n_components": [1, 2, 3]},
            scoring=bic_scorer,
            cv=2,
            n_jobs=n_jobs,  # joblib's loky workers unpickle the estimator and data
        ).fit(X)

    parallel, sequential = search(2), search(1)
    assert_allclose(
        parallel.cv_results_["mean_test_score"],
        sequential.cv_results_["mean_test_score"],
    )
    assert parallel.best_params_ == sequential.best_params_


@pytest.mark.parametrize(
    "layout",
    ["tabular", "stack", "channels", "volumes", "masked", "patches"],
)
def test_labels_are_the_argmax_of_the_responsibilities(layout):
    """predict takes the argmax of the logits, without the softmax; the
    labels are those of predict_proba on every input layout."""
    images, _ = make_segmentation_images(3, (24, 24), n_classes=3, random_state=0)
    X, mask, params = images, None, {}
    if layout == "tabular":
        X = images.reshape(-1, 1)[:500]
    elif layout == "channels":
        X = np.stack([images, images**2], axis=-1)
    elif layout == "volumes":
        X, params = images[None], {"spatial_dims": 3}
    elif layout == "masked":
        mask = np.zeros(images.shape, bool)
        mask[:, 4:18, 6:20] = True
    elif layout == "patches":
        params = {"patch_pixels": 256}
    model = DeepGaussianMixture(3, **FAST, **params).fit(X, mask=mask)
    labels = model.predict(X, mask=mask)
    resp = model.predict_proba(X, mask=mask)
    expected = resp.argmax(-1)
    if mask is not None:
        expected[~mask] = -1
    assert labels.dtype.kind == "i"
    assert_array_equal(labels, expected)


@pytest.mark.parametrize("seed", range(4))
def test_no_retry_from_normalising_patches_differently(seed, capsys):
    """Networks trained on patches predict with their running statistics:
    the labels before and after training compared for the retry must be
    normalised alike, or a fit of unchanged labels is trained twice."""
    X, _ = make_segmentation_images(1, (64, 64), random_state=seed)
    model = _model(4, max_iter=1, init_iter=3, patch_pixels=256, verbose=1, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X)
    assert "emptied in training" not in capsys.readouterr().out
