"""Reliability: odd input, degenerate data, interruption and persistence.

Every estimator either returns finite outputs shaped like its input or
raises a ValueError or TypeError that says what was expected, before any
work starts; it never modifies its input.
"""

import pickle
from concurrent.futures import ThreadPoolExecutor

import joblib
import numpy as np
import pytest
import sklearn
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline

from skdgmm import DeepGaussianMixture, PixelwiseMixture, SpatialFeatures
from skdgmm.priors import init_from_labels
from skdgmm.svgmm import SpatiallyVariantGaussianMixture

from .conftest import FAST, interrupt_step

# tiny data and few iterations: EM and training need not converge
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST_MODEL = dict(FAST, max_iter=2, init_iter=2)

ESTIMATORS = {
    "deep": lambda k, spatial_dims: DeepGaussianMixture(
        k, spatial_dims=spatial_dims, **FAST_MODEL
    ),
    "deep-variant": lambda k, spatial_dims: DeepGaussianMixture(
        k,
        covariance_type="diag",
        spatially_variant=True,
        spatial_dims=spatial_dims,
        **FAST_MODEL,
    ),
    "pixelwise": lambda k, spatial_dims: PixelwiseMixture(
        GaussianMixture(k, random_state=0), spatial_dims=spatial_dims
    ),
    "svgmm": lambda k, spatial_dims: SpatiallyVariantGaussianMixture(
        k, max_iter=3, random_state=0, spatial_dims=spatial_dims
    ),
    "features": lambda k, spatial_dims: SpatialFeatures(
        sigmas=(1.0,), spatial_dims=spatial_dims
    ),
}
PER_PIXEL = ("predict", "predict_proba", "score_samples", "transform")
PER_MASK = ("score", "bic", "aic")


def _check_outputs(estimator, X, mask):
    """Call every public method of a fitted estimator and check its output."""
    label_shape = X.shape[:1] if X.ndim == 2 else X.shape[: 1 + estimator.spatial_dims]
    inside = np.ones(label_shape, bool) if mask is None else np.asarray(mask, bool)
    for method in PER_PIXEL:
        if not hasattr(estimator, method):
            continue
        out = getattr(estimator, method)(X, mask=mask)
        assert out.shape[: len(label_shape)] == label_shape, method
        assert np.isfinite(out).all(), method
        if method == "predict":
            n_components = getattr(estimator, "n_components", None) or len(
                estimator.estimator_.means_
            )
            assert ((out[inside] >= 0) & (out[inside] < n_components)).all()
            assert (out[~inside] == -1).all()
        if method == "predict_proba":
            assert_allclose(out[inside].sum(-1), 1.0, atol=1e-5)
    for method in PER_MASK:
        if hasattr(estimator, method) and inside.any():
            assert np.isfinite(getattr(estimator, method)(X, mask=mask)), method
    if hasattr(estimator, "sample"):
        samples, labels = estimator.sample(4)
        assert samples.shape == (4, estimator.n_features_in_)
        assert np.isfinite(samples).all() and labels.shape == (4,)


def _beyond_precision(X, spatial_dims):
    """Whether degenerate components cannot be regularized in floating point.

    True where no float64 covariance holds the pixels, as for scikit-learn
    (the smallest variance plus reg_covar is below the rounding error of the
    largest variance or squared value), or where reg_covar relative to the
    largest squared value underflows float32, the network's precision, so
    that a component collapsing onto one value is singular.
    """
    X = X.astype(np.float64)
    pixels = X.reshape(-1, X.shape[-1] if X.ndim in (2, spatial_dims + 2) else 1)
    variances = np.linalg.eigvalsh(np.atleast_2d(np.cov(pixels.T, bias=True)))
    largest = max(variances.max(), np.square(pixels).max())
    return (
        variances.min() + 1e-6 < 1e3 * np.finfo(np.float64).eps * largest
        or 1e-6 < np.finfo(np.float32).tiny * largest
    )


@st.composite
def image_stacks(draw):
    """A valid layout for ``spatial_dims``, of any dtype and odd values."""
    spatial_dims = draw(st.sampled_from([2, 3]))
    ndim = draw(st.sampled_from([2, 1 + spatial_dims, 2 + spatial_dims]))
    shape = draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=5))
    base = draw(hnp.arrays(np.float64, shape, elements=st.floats(-3, 3, width=16)))
    values = draw(st.sampled_from(["any", "constant", "two values", "huge", "tiny"]))
    dtype = draw(
        st.sampled_from([np.float64, np.float32, np.int16, np.uint8, np.bool_])
    )
    if values == "constant":
        base = np.full(shape, base.flat[0])
    elif values == "two values":
        base = np.where(base > 0, 3.0, -3.0)
    elif values in ("huge", "tiny") and dtype in (np.float32, np.float64):
        base = base * (1e30 if values == "huge" else 1e-30)
    if dtype in (np.int16, np.uint8):
        base = np.abs(base) * 40
    X = base.astype(dtype)
    mask = draw(
        st.one_of(
            st.none(),
            hnp.arrays(
                np.bool_,
                X.shape[:1] if ndim == 2 else X.shape[: 1 + spatial_dims],
            ),
        )
    )
    return X, mask, spatial_dims


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    data=image_stacks(),
    name=st.sampled_from(sorted(ESTIMATORS)),
    n_components=st.integers(1, 3),
)
def test_valid_layouts_give_finite_outputs_and_leave_input_alone(
    data, name, n_components
):
    X, mask, spatial_dims = data
    X_copy, mask_copy = X.copy(), None if mask is None else mask.copy()
    estimator = ESTIMATORS[name](n_components, spatial_dims)
    n_pixels = (
        np.count_nonzero(mask)
        if mask is not None
        else X.size // (X.shape[-1] if X.ndim in (2, spatial_dims + 2) else 1)
    )
    try:
        estimator.fit(X, mask=mask)
    except ValueError as error:
        # the reasons to refuse a valid layout: too few pixels for the
        # components (for features: a single tabular sample), or values whose
        # spread is below their rounding error, as scikit-learn does
        minimum = 2 if name == "features" else max(2, n_components)
        if n_pixels < minimum:
            assert "n_samples" in str(error) or "sample(s)" in str(error)
        else:
            assert _beyond_precision(X, spatial_dims), error
            assert "scale the input data" in str(error)
    else:
        _check_outputs(estimator, X, mask)
    finally:
        assert_array_equal(X, X_copy)
        if mask is not None:
            assert_array_equal(mask, mask_copy)


def _no_work(*args, **kwargs):
    raise AssertionError("work started before the input was validated")


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize(
    "X, mask, error, match",
    [
        (np.ones((2, 6, 6), complex), None, ValueError, "real numbers"),
        (np.full((2, 6, 6), "a", dtype=object), None, ValueError, "convert"),
        (np.full((2, 6, 6), np.nan), None, ValueError, "NaN"),
        (np.full((2, 6, 6), -np.inf), None, ValueError, "infinity"),
        (np.full((2, 6, 6), 1e200), None, ValueError, "squares overflow"),
        (np.zeros((2, 3, 4, 5, 6, 7)), None, ValueError, "image stack"),
        (np.zeros((2, 6, 6)), np.ones((2, 6), bool), ValueError, "mask must have"),
        (np.zeros((2, 6, 6)), np.full((2, 6, 6), 0.5), TypeError, "boolean"),
        (np.zeros((2, 6, 6)), np.full((2, 6, 6), 2), TypeError, "boolean"),
    ],
)
def test_bad_input_is_refused_before_any_work(monkeypatch, name, X, mask, error, match):
    for module in ("skdgmm.mixture", "skdgmm.svgmm", "skdgmm.pixelwise"):
        for function in ("GaussianMixture", "build_network", "clone"):
            monkeypatch.setattr(f"{module}.{function}", _no_work, raising=False)
    monkeypatch.setattr("scipy.ndimage.gaussian_filter", _no_work)
    with pytest.raises(error, match=match):
        ESTIMATORS[name](2, 2).fit(X, mask=mask)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_masks_at_prediction(images, name):
    X, _ = images
    estimator = ESTIMATORS[name](2, 2).fit(X)
    mask = np.zeros(X.shape, bool)
    _check_outputs(estimator, X, mask)  # nothing to label: all outside
    for method in PER_MASK:
        if hasattr(estimator, method):
            with pytest.raises(ValueError, match="sample|pixels"):
                getattr(estimator, method)(X, mask=mask)
    mask[0, 3, 4] = True  # fewer pixels than components is fine here
    _check_outputs(estimator, X, mask)
    # integer zeros and ones are a mask
    _check_outputs(estimator, X, mask.astype(np.uint8))
    method = "transform" if name == "features" else "predict"
    with pytest.raises(ValueError, match=r"mask must have shape \(3, 20, 17\)"):
        getattr(estimator, method)(X, mask=mask[:, :-1])
    with pytest.raises(TypeError, match="boolean"):
        getattr(estimator, method)(X, mask=mask.astype(float))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("storage", ["read-only", "memmap"])
def test_read_only_and_memmap_input(images, tmp_path, name, storage):
    X, labels = images
    mask = labels > 0
    if storage == "memmap":
        X_path, mask_path = tmp_path / "X.npy", tmp_path / "mask.npy"
        np.save(X_path, X)
        np.save(mask_path, mask)
        X_in, mask_in = np.load(X_path, mmap_mode="r"), np.load(mask_path, "r")
    else:
        X_in, mask_in = X.copy(), mask.copy()
        X_in.setflags(write=False)
        mask_in.setflags(write=False)
    estimator = ESTIMATORS[name](3, 2).fit(X_in, mask=mask_in)
    _check_outputs(estimator, X_in, mask_in)
    reference = ESTIMATORS[name](3, 2).fit(X, mask=mask)
    method = "transform" if name == "features" else "predict"
    assert_array_equal(
        getattr(estimator, method)(X_in, mask=mask_in),
        getattr(reference, method)(X, mask=mask),
    )
    assert_array_equal(X_in, X)
    assert_array_equal(mask_in, mask)


def _degenerate_images(case, rng):
    noise = rng.standard_normal((2, 8, 8))
    return {
        "constant": np.full((2, 8, 8), 7.0),
        "two values, K=3": np.where(noise > 0, 200.0, 10.0),
        "constant channel": np.stack([noise, np.full_like(noise, 5.0)], -1),
        "duplicated channels": np.stack([100 * noise, 100 * noise], -1),
        "tiny values": 1e-30 * noise,
        "huge values": 1e30 * noise,
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "constant",
        "two values, K=3",
        "constant channel",
        "duplicated channels",
        "tiny values",
        "huge values",
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("gaussians", ["free", "bounded", "fixed"])
def test_degenerate_data_gives_a_finite_mixture(
    rng, case, dtype, covariance_type, gaussians
):
    X = _degenerate_images(case, rng).astype(dtype)
    model = DeepGaussianMixture(
        3, covariance_type=covariance_type, gaussians=gaussians, **FAST_MODEL
    ).fit(X)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.isfinite(getattr(model, name)).all(), name
    assert (model.weights_ >= 0).all() and model.weights_.sum() == pytest.approx(1)
    _check_outputs(model, X, None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiny_values_are_regularized_like_gaussian_mixture(dtype, rng):
    X = (1e-30 * rng.standard_normal((60, 2))).astype(dtype)
    model = DeepGaussianMixture(2, **FAST).fit(X)
    gm = GaussianMixture(2, random_state=0).fit(X)
    # reg_covar dominates the spread, as in GaussianMixture
    assert_allclose(model.covariances_, gm.covariances_, rtol=1e-6, atol=1e-20)
    assert model.score(X) == pytest.approx(gm.score(X), rel=1e-6)


@pytest.mark.parametrize("tabular", [False, True])
def test_no_regularization_on_degenerate_data_advises_like_sklearn(rng, tabular):
    X = np.where(rng.standard_normal((2, 8, 8)) > 0, 1.0, 0.0)
    if tabular:
        X = X.reshape(-1, 1)
    with pytest.raises(ValueError, match="increase reg_covar") as sklearn_error:
        GaussianMixture(3, reg_covar=0.0, random_state=0).fit(X.reshape(-1, 1))
    with pytest.raises(ValueError) as error:
        DeepGaussianMixture(3, reg_covar=0.0, **FAST_MODEL).fit(X)
    assert str(error.value) == str(sklearn_error.value)


def test_diverging_training_raises_a_clear_error(images):
    X, _ = images
    with pytest.raises(ValueError, match="diverged. Try a smaller learning_rate"):
        DeepGaussianMixture(3, covariance_type="diag", learning_rate=1e4, **FAST).fit(X)


def test_float32_with_large_values_reaches_the_wrapped_estimator_as_float64(rng):
    X = (1e30 * rng.standard_normal((2, 8, 8))).astype(np.float32)
    model = PixelwiseMixture(GaussianMixture(2, random_state=0)).fit(X)
    _check_outputs(model, X, None)


def test_interrupt_in_a_later_initialization_keeps_the_best_so_far(images, monkeypatch):
    X, _ = images
    # without the Potts term the loss is the negated lower bound
    params = dict(
        FAST,
        init_iter=2,
        max_iter=4,
        tol=0,
        spatial_regularization=0,
        init_params="random",
    )
    first = DeepGaussianMixture(3, **params).fit(X)
    # the first initialization runs to the end; the second stops early
    interrupt_step(monkeypatch, at=2 + 4 + 2 + 1)
    with pytest.warns(UserWarning, match="interrupted"):
        model = DeepGaussianMixture(3, n_init=3, **params).fit(X)
    assert model.lower_bound_ >= first.lower_bound_ - 1e-9
    _check_outputs(model, X, None)
    monkeypatch.undo()
    # fitting again leaves nothing of the interrupted fit behind
    fresh = DeepGaussianMixture(3, n_init=3, **params).fit(X)
    assert_array_equal(model.fit(X).predict(X), fresh.predict(X))


def test_interrupt_in_the_initial_em_of_a_later_initialization(images, monkeypatch):
    X, _ = images
    calls = []
    fit = GaussianMixture.fit

    def interrupting_fit(self, *args, **kwargs):
        calls.append(None)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(GaussianMixture, "fit", interrupting_fit)
    with pytest.warns(UserWarning, match="best initialization so far"):
        model = DeepGaussianMixture(3, n_init=3, **FAST).fit(X)
    _check_outputs(model, X, None)
    calls.clear()
    calls.append(None)  # the next call is the second: an interrupt with no run
    with pytest.raises(KeyboardInterrupt):
        DeepGaussianMixture(3, **FAST).fit(X)


def test_interrupt_during_warm_start_keeps_a_usable_model(images, monkeypatch):
    X, _ = images
    model = DeepGaussianMixture(3, warm_start=True, **FAST_MODEL).fit(X)
    interrupt_step(monkeypatch, at=2)
    with pytest.warns(UserWarning, match="interrupted"):
        model.fit(X)
    assert model.n_iter_ == 1
    _check_outputs(model, X, None)


def _outputs(estimator, X, mask):
    method = "transform" if hasattr(estimator, "transform") else "predict"
    outputs = [getattr(estimator, method)(X, mask=mask)]
    if hasattr(estimator, "predict_proba"):
        outputs.append(estimator.predict_proba(X, mask=mask))
    if hasattr(estimator, "score_samples"):
        outputs.append(estimator.score_samples(X, mask=mask))
    return outputs


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_persistence_round_trip_gives_identical_outputs(images, tmp_path, name, dump):
    X, labels = images
    mask = labels > 0
    estimator = ESTIMATORS[name](3, 2).fit(X, mask=mask)
    if dump == "pickle":
        loaded = pickle.loads(pickle.dumps(estimator))
    else:
        joblib.dump(estimator, tmp_path / "model.joblib")
        loaded = joblib.load(tmp_path / "model.joblib")
    for expected, got in zip(_outputs(estimator, X, mask), _outputs(loaded, X, mask)):
        assert_array_equal(got, expected)


def test_pipeline_round_trip(images, tmp_path):
    X, _ = images
    pipe = make_pipeline(
        SpatialFeatures(sigmas=(1.0,)), DeepGaussianMixture(3, **FAST_MODEL)
    )
    labels = pipe.fit(X).predict(X)
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    assert_array_equal(joblib.load(tmp_path / "pipe.joblib").predict(X), labels)


def test_model_trained_on_another_device_loads_on_the_cpu(images, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    X, _ = images
    model = DeepGaussianMixture(3, **FAST_MODEL).fit(X)
    labels = model.predict(X)
    # the network is kept on the CPU whatever the training device
    assert {p.device.type for p in model.network_.parameters()} == {"cpu"}
    # as if trained on a GPU: a pickle made there loads and predicts here
    model.set_params(device="cuda")
    model.device_ = torch.device("cuda")
    loaded = pickle.loads(pickle.dumps(model))
    with pytest.warns(UserWarning, match="not available here; using the CPU"):
        assert_array_equal(loaded.predict(X), labels)
    # the weights alone load without unpickling code
    torch.save(model.network_.state_dict(), tmp_path / "network.pt")
    state = torch.load(tmp_path / "network.pt", map_location="cpu", weights_only=True)
    loaded.network_.load_state_dict(state)
    assert_array_equal(loaded.set_params(device="cpu").predict(X), labels)


@pytest.mark.parametrize("name", ["pixelwise", "svgmm", "features"])
def test_skops_round_trip(images, name):
    sio = pytest.importorskip("skops.io")
    X, labels = images
    mask = labels > 0
    estimator = ESTIMATORS[name](3, 2).fit(X, mask=mask)
    data = sio.dumps(estimator)
    loaded = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    for expected, got in zip(_outputs(estimator, X, mask), _outputs(loaded, X, mask)):
        assert_array_equal(got, expected)


# -- predicting from threads ----------------------------------------------------


@pytest.mark.parametrize("path", ["trained on patches", "tiled"])
def test_predicting_from_threads_gives_the_sequential_result(images, monkeypatch, path):
    """A forward pass once switched the shared network's normalisation to
    the running statistics and back: threads changed each other's."""
    X, _ = images
    if path == "trained on patches":
        model = DeepGaussianMixture(3, patch_pixels=16, **FAST_MODEL).fit(X)
        assert bool(model.network_.trained_on_patches)
    else:
        model = DeepGaussianMixture(3, **FAST_MODEL).fit(X)
        # the whole images go in tiles (running statistics), the crops not
        monkeypatch.setattr("skdgmm._data.TILE_PIXELS", 64)
        monkeypatch.setattr("skdgmm._networks.TILE_PIXELS", 64)
    inputs = [X, X[:, :6, :7]] * 8

    def outputs(x):
        return model.predict_proba(x), model.predict(x)

    sequential = [outputs(x) for x in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(outputs, inputs))
    for (proba, labels), (expected_proba, expected_labels) in zip(threaded, sequential):
        assert_array_equal(proba, expected_proba)
        assert_array_equal(labels, expected_labels)


# -- what never enters the model: values outside the mask -----------------------


@st.composite
def non_finite_outside_the_mask(draw):
    """X of any layout, a mask, and NaN or infinities outside it only."""
    kind = draw(st.sampled_from(["tabular", "images", "channels"]))
    n = draw(st.integers(1, 3))
    shape = {
        "tabular": (draw(st.integers(6, 30)), draw(st.integers(1, 3))),
        "images": (n, draw(st.integers(3, 8)), draw(st.integers(3, 8))),
        "channels": (n, draw(st.integers(3, 8)), draw(st.integers(3, 8)), 2),
    }[kind]
    X = draw(hnp.arrays(np.float64, shape, elements=st.floats(-3, 3, width=16)))
    pixel_shape = shape[:1] if kind == "tabular" else shape[:3]
    mask = draw(hnp.arrays(np.bool_, pixel_shape))
    assume(mask.sum() >= 3 and not mask.all())
    outside = ~mask if kind == "images" else np.broadcast_to(~mask[..., None], shape)
    bad = draw(hnp.arrays(np.bool_, shape)) & outside
    assume(bad.any())
    value = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    # the replacement: the mean of each channel inside the mask
    inside = X[mask]
    filled = np.where(bad, inside.mean(0), X)
    X = X.copy()
    X[bad] = value
    return X, mask, filled


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=non_finite_outside_the_mask(), name=st.sampled_from(sorted(ESTIMATORS)))
def test_non_finite_values_outside_the_mask_are_accepted(data, name):
    """Pixels outside the mask never enter the model: they may be NaN or
    infinite (the network sees them as the mean of the mask's pixels)."""
    X, mask, filled = data
    X_copy = X.copy()
    try:
        reference = ESTIMATORS[name](2, 2).fit(filled, mask=mask)
    except ValueError:
        # data refused for another reason (degenerate values): refused alike
        with pytest.raises(ValueError):
            ESTIMATORS[name](2, 2).fit(X, mask=mask)
        return
    estimator = ESTIMATORS[name](2, 2).fit(X, mask=mask)
    _check_outputs(estimator, X, mask)
    for got, expected in zip(
        _outputs(estimator, X, mask), _outputs(reference, filled, mask)
    ):
        assert_array_equal(got, expected)
    assert_array_equal(X, X_copy)  # the user's array is left alone


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("value, match", [(np.nan, "NaN"), (np.inf, "infinity")])
def test_non_finite_values_inside_the_mask_are_refused(images, name, value, match):
    X, labels = images
    mask = labels > 0
    X = X.copy()
    X[~mask] = np.nan
    X[np.nonzero(mask)[0][0], np.nonzero(mask)[1][0], np.nonzero(mask)[2][0]] = value
    with pytest.raises(ValueError, match=f"{match} inside the mask"):
        ESTIMATORS[name](2, 2).fit(X, mask=mask)
    fitted = ESTIMATORS[name](2, 2).fit(
        np.nan_to_num(X, nan=0.0, posinf=0.0), mask=mask
    )
    method = "transform" if name == "features" else "predict"
    with pytest.raises(ValueError, match=f"{match} inside the mask"):
        getattr(fitted, method)(X, mask=mask)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_images_of_different_sizes_get_a_message_that_says_what_to_do(images, name):
    X, _ = images
    with pytest.raises(
        ValueError, match=r"must share one shape.*\(20, 17\), \(20, 10\)"
    ):
        ESTIMATORS[name](2, 2).fit([X[0], X[1][:, :10]])
    with pytest.raises(ValueError, match="fit them one by one, or resize them"):
        ESTIMATORS[name](2, 2).fit([X[0], X[1][:, :10]])


# -- torch tensors, with and without scikit-learn's array API dispatch ----------

TORCH_ESTIMATORS = {
    # under array_api_dispatch, GaussianMixture (the initial EM) takes no
    # k-means initialization
    "deep": lambda: DeepGaussianMixture(3, init_params="random", **FAST_MODEL),
    "svgmm": lambda: ESTIMATORS["svgmm"](3, 2),
    "features": lambda: ESTIMATORS["features"](3, 2),
}


@pytest.mark.parametrize("name", sorted(TORCH_ESTIMATORS))
@pytest.mark.parametrize("dispatch", [False, True])
@pytest.mark.parametrize("tabular", [False, True])
def test_torch_tensors_on_the_cpu_are_read_as_arrays(
    images, monkeypatch, name, dispatch, tabular
):
    """They failed in input validation with a TypeError under
    array_api_dispatch. The baselines answer in NumPy (the deep mixture, a
    drop-in GaussianMixture, answers in X's namespace under dispatch: see
    below)."""
    X, labels = images
    mask = labels > 0
    if tabular:
        X, mask = X.reshape(-1, 1), mask.reshape(-1)
    # scikit-learn checks the variable when dispatch is turned on
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    expected = _outputs(TORCH_ESTIMATORS[name]().fit(X, mask=mask), X, mask)
    tensor = torch.as_tensor(X).requires_grad_(True)
    with sklearn.config_context(array_api_dispatch=dispatch):
        estimator = TORCH_ESTIMATORS[name]().fit(tensor, mask=torch.as_tensor(mask))
        got = _outputs(estimator, tensor, torch.as_tensor(mask))
    in_namespace = dispatch and name == "deep"
    for a, b in zip(got, expected):
        assert isinstance(a, torch.Tensor if in_namespace else np.ndarray)
        assert_array_equal(np.asarray(a), b)


_GAUSSIANS = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tabular", [False, True])
def test_under_dispatch_the_deep_mixture_answers_in_the_namespace_of_X(
    images, monkeypatch, dtype, tabular
):
    """As GaussianMixture under array_api_dispatch: the fitted Gaussians and
    the arrays returned for a torch tensor are torch tensors of its dtype on
    its device, equal to those of the NumPy fit; scores are floats. (They
    were NumPy arrays: 32 of scikit-learn's array-API tests of
    GaussianMixture failed with the class replaced.)"""
    X, labels = images
    mask = labels > 0
    if tabular:
        X, mask = X.reshape(-1, 1), mask.reshape(-1)
    X = X.astype(np.float32 if dtype == torch.float32 else np.float64)
    make = TORCH_ESTIMATORS["deep"]
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    expected = make().fit(X, mask=mask)
    tensor = torch.as_tensor(X)
    with sklearn.config_context(array_api_dispatch=True):
        model = make().fit(tensor, mask=mask)
        arrays = {name: getattr(model, name) for name in _GAUSSIANS}
        arrays.update(
            zip(
                ["predict", "predict_proba", "score_samples"],
                _outputs(model, tensor, mask),
            )
        )
        arrays["sample"], arrays["sample labels"] = model.sample(5)
        scores = [
            getattr(model, name)(tensor, mask=mask) for name in ("score", "bic", "aic")
        ]
    for name, array in arrays.items():
        assert isinstance(array, torch.Tensor), name
        assert array.device == tensor.device, name
    # probabilities are float64 whatever X, as GaussianMixture's
    for name in (*_GAUSSIANS, "score_samples"):
        assert arrays[name].dtype == dtype, name
    for name in _GAUSSIANS:
        assert_array_equal(arrays[name].numpy(), getattr(expected, name))
    for name, array in zip(
        ["predict", "predict_proba", "score_samples"], _outputs(expected, X, mask)
    ):
        assert_array_equal(arrays[name].numpy(), array)
    assert all(type(score) is float for score in scores)
    assert scores == [
        expected.score(X, mask=mask),
        expected.bic(X, mask=mask),
        expected.aic(X, mask=mask),
    ]


def test_a_mixture_fitted_under_dispatch_answers_numpy_without_it(images, monkeypatch):
    """Its torch Gaussians are read wherever the model reads them: scores,
    samples, a warm start, a pickle."""
    X, _ = images
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    with sklearn.config_context(array_api_dispatch=True):
        model = TORCH_ESTIMATORS["deep"]().fit(torch.as_tensor(X))
    expected = TORCH_ESTIMATORS["deep"]().fit(X)
    assert isinstance(model.means_, torch.Tensor)
    assert model.score(X) == expected.score(X)
    assert isinstance(model.score_samples(X), np.ndarray)
    assert_array_equal(model.sample(4)[0], expected.sample(4)[0])
    restored = pickle.loads(pickle.dumps(model))
    assert_array_equal(restored.predict(X), expected.predict(X))
    model.set_params(warm_start=True).fit(X)
    assert isinstance(model.means_, np.ndarray)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_under_dispatch_cuda_tensors_are_answered_on_their_device(images, monkeypatch):
    X, _ = images
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    tensor = torch.as_tensor(X, device="cuda")
    with sklearn.config_context(array_api_dispatch=True):
        model = TORCH_ESTIMATORS["deep"]().fit(tensor)
        labels = model.predict(tensor)
    assert model.means_.device.type == labels.device.type == "cuda"
    expected = TORCH_ESTIMATORS["deep"]().fit(X)
    assert_array_equal(labels.cpu().numpy(), expected.predict(X))
    # a mask and labels on the GPU are read as X is (np.asarray of them failed)
    mask = torch.zeros(X.shape, dtype=torch.bool, device="cuda")
    mask[:, ::2] = True
    with sklearn.config_context(array_api_dispatch=True):
        assert model.score(tensor, mask=mask) == expected.score(
            X, mask=mask.cpu().numpy()
        )
        partial = torch.where(mask, labels, -1)
        TORCH_ESTIMATORS["deep"]().fit(tensor, labels=partial)


@pytest.mark.parametrize("dispatch", [False, True])
def test_torch_init_parameters_are_read_as_arrays(images, monkeypatch, dispatch):
    """``*_init`` tensors (scikit-learn's array-API test sets them so) failed
    inside scikit-learn's validation with a TypeError under
    array_api_dispatch."""
    X, labels = images
    mask = labels > 0
    inits = init_from_labels(X, np.where(mask, labels - 1, -1), n_components=2)
    # under array_api_dispatch GaussianMixture takes no k-means initialization
    params = dict(init_params="random", **FAST_MODEL)
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    expected = DeepGaussianMixture(2, **inits, **params).fit(X, mask=mask)
    tensors = {name: torch.as_tensor(value) for name, value in inits.items()}
    with sklearn.config_context(array_api_dispatch=dispatch):
        model = DeepGaussianMixture(2, **tensors, **params).fit(
            torch.as_tensor(X), mask=mask
        )
    assert isinstance(model.means_, torch.Tensor if dispatch else np.ndarray)
    assert_array_equal(np.asarray(model.means_), expected.means_)
    assert_array_equal(model.predict(X, mask=mask), expected.predict(X, mask=mask))


def test_k_means_initialization_under_array_api_dispatch_is_refused_as_sklearn_does(
    images, monkeypatch
):
    X, _ = images
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    with sklearn.config_context(array_api_dispatch=True):
        with pytest.raises(NotImplementedError, match="array_api_dispatch"):
            GaussianMixture(3).fit(X.reshape(-1, 1))
        with pytest.raises(NotImplementedError, match="array_api_dispatch"):
            DeepGaussianMixture(3, **FAST_MODEL).fit(torch.as_tensor(X))


def test_torch_tensors_on_another_device_are_refused(images):
    X, _ = images
    with pytest.raises(
        TypeError, match=r"torch tensor on the device 'meta'.*cpu\(\)\.numpy\(\)"
    ):
        DeepGaussianMixture(3, **FAST_MODEL).fit(torch.as_tensor(X, device="meta"))
