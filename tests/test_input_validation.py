"""Bad input gets a clear ValueError or TypeError; good input never crashes."""

import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from skdgmm import DeepGaussianMixture, PixelwiseMixture, SpatialFeatures
from skdgmm.svgmm import SpatiallyVariantGaussianMixture

from .conftest import FAST

FAST_MODEL = dict(FAST, max_iter=2, init_iter=2)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    X=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int16, np.uint8]),
        shape=hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=7),
        elements=st.integers(0, 200),
    ),
    n_components=st.integers(1, 3),
)
def test_any_small_array_gives_a_result_or_a_clear_error(X, n_components):
    original = X.copy()
    model = DeepGaussianMixture(n_components, **FAST_MODEL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            labels = model.fit_predict(X)
    except (ValueError, TypeError) as error:
        assert str(error)  # a message that says what was expected
        return
    finally:
        np.testing.assert_array_equal(X, original)
    assert labels.shape == (X.shape[:1] if X.ndim == 2 else X.shape[:3])
    assert ((labels >= 0) & (labels < n_components)).all()
    scores = model.score_samples(X)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize(
    "X, error, match",
    [
        (np.zeros((2, 3, 4, 5, 6)), ValueError, "image stack"),
        (np.ones((4, 6, 6)) * np.nan, ValueError, "NaN"),
        (np.ones((4, 6, 6)) * np.inf, ValueError, "infinity"),
        (np.ones((4, 6, 6), dtype=complex), ValueError, "Complex"),
        (np.zeros((0, 6, 6)), ValueError, "0 sample"),
        (np.zeros((2, 0, 6)), ValueError, "empty image stack"),
        (np.array([["a", "b"], ["c", "d"]], dtype=object), ValueError, "convert"),
    ],
)
def test_bad_arrays_are_rejected_before_work(X, error, match):
    with pytest.raises(error, match=match):
        DeepGaussianMixture(2, **FAST_MODEL).fit(X)


def test_model_trained_elsewhere_predicts_on_cpu(rng):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    X = rng.standard_normal((2, 8, 8))
    model = DeepGaussianMixture(2, **FAST_MODEL).fit(X)
    model.set_params(device="cuda")  # as if trained on a GPU machine
    with pytest.warns(UserWarning, match="not available here; using the CPU"):
        labels = model.predict(X)
    assert labels.shape == X.shape


# -- layouts: channel_axis and the rule for single images ---------------------

LAYOUT_ESTIMATORS = {
    "deep": lambda **kw: DeepGaussianMixture(2, **FAST_MODEL, **kw),
    "pixelwise": lambda **kw: PixelwiseMixture(GaussianMixture(2, random_state=0), **kw),
    "svgmm": lambda **kw: SpatiallyVariantGaussianMixture(
        2, max_iter=3, random_state=0, **kw
    ),
    "features": lambda **kw: SpatialFeatures(sigmas=(1.0,), **kw),
}


def _outputs(estimator, X):
    method = "transform" if hasattr(estimator, "transform") else "predict"
    outputs = [getattr(estimator, method)(X)]
    if hasattr(estimator, "predict_proba"):
        outputs.append(estimator.predict_proba(X))
    return outputs


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["pixelwise", "svgmm", "features"]),
    spatial_dims=st.sampled_from([2, 3]),
    shape=hnp.array_shapes(min_dims=3, max_dims=5, min_side=2, max_side=5),
    channel_axis=st.sampled_from([1, -1]),
)
def test_channel_axis_reads_channels_first_or_last(name, spatial_dims, shape, channel_axis):
    """(n, C, *spatial) with channel_axis=1 is (n, *spatial, C) with -1."""
    shape = (shape + (2, 2))[: 2 + spatial_dims]
    last = np.random.RandomState(0).rand(*shape)
    X = np.moveaxis(last, -1, 1) if channel_axis == 1 else last
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        got = LAYOUT_ESTIMATORS[name](spatial_dims=spatial_dims, channel_axis=channel_axis)
        expected = LAYOUT_ESTIMATORS[name](spatial_dims=spatial_dims, channel_axis=-1)
        got, expected = _outputs(got.fit(X), X), _outputs(expected.fit(last), last)
    if name == "features" and channel_axis == 1:
        # the features come out on the input's channel axis
        expected[0] = np.moveaxis(expected[0], -1, 1)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_deep_mixture_reads_pytorch_layout_with_channel_axis_1(images):
    X, _ = images
    first = np.stack([X, X**2], axis=1)  # (n, C, H, W)
    last = np.moveaxis(first, 1, -1)
    with pytest.warns(UserWarning, match="channel_axis=1"):
        DeepGaussianMixture(2, **FAST_MODEL).fit(first)  # read as (n, H, W, C)
    model = DeepGaussianMixture(2, channel_axis=1, **FAST_MODEL).fit(first)
    reference = DeepGaussianMixture(2, **FAST_MODEL).fit(last)
    assert model.n_features_in_ == 2
    np.testing.assert_array_equal(model.predict(first), reference.predict(last))
    np.testing.assert_array_equal(model.predict_proba(first), reference.predict_proba(last))
    np.testing.assert_array_equal(model.means_, reference.means_)
    assert model.predict(first, mask=first[:, 0] > 0).shape == X.shape


IMPLAUSIBLE = [
    # PyTorch's (n, C, H, W), read as (n, H, W, C)
    ((2, 3, 20, 17), 2, "channel_axis=1", -1),
    ((2, 1, 20, 17), 2, "channel_axis=1", -1),
    # a stack of volumes read as 2-D images with many channels
    ((2, 24, 24, 24), 2, "spatial_dims=3", -1),
    # a single (H, W) image read as tabular data
    ((20, 17), 2, r"X\[None\]", -1),
    ((32, 32), 3, r"X\[None\]", -1),
    # a single (H, W, C) image read as H images of W x C pixels
    ((24, 24, 3), 2, r"X\[None\]", None),
    ((12, 16, 16, 2), 3, r"X\[None\]", None),
]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", sorted(LAYOUT_ESTIMATORS))
@pytest.mark.parametrize("shape, spatial_dims, match, axis", IMPLAUSIBLE)
def test_implausible_layouts_warn_unless_channel_axis_is_given(
    name, shape, spatial_dims, match, axis
):
    X = np.random.RandomState(0).rand(*shape)
    make = LAYOUT_ESTIMATORS[name]
    with pytest.warns(UserWarning, match=f"shape {re.escape(str(shape))}.*{match}"):
        make(spatial_dims=spatial_dims).fit(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make(spatial_dims=spatial_dims, channel_axis=axis).fit(X)
    assert not _layout_warnings(caught)


def _layout_warnings(caught):
    return [w for w in caught if "to keep this reading" in str(w.message)]


@pytest.mark.parametrize(
    "shape, spatial_dims",
    [((2, 20, 17), 2), ((2, 20, 17, 3), 2), ((200, 3), 2), ((500, 20), 2),
     ((2, 8, 8, 8), 3), ((2, 8, 8, 8, 3), 3), ((3, 32, 32, 16), 2)],
)
def test_plausible_layouts_do_not_warn(shape, spatial_dims):
    X = np.random.RandomState(0).rand(*shape)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PixelwiseMixture(
            GaussianMixture(2, random_state=0), spatial_dims=spatial_dims
        ).fit(X)
    assert not _layout_warnings(caught)


@pytest.mark.parametrize("name", sorted(LAYOUT_ESTIMATORS))
@pytest.mark.parametrize(
    "shape, channel_axis, match",
    [
        ((2, 6, 6, 3), None, "channel_axis=None"),
        ((2, 6, 6), -1, "channel_axis=-1"),
        ((2, 6, 6), 1, "channel_axis=1"),
        ((2, 6, 6, 3), 0, "axis 0 indexes the images"),
        ((2, 6, 6, 3), 4, "not an axis of X"),
        ((2, 6, 6, 3), -4, "axis 0 indexes the images"),
        # a 2-D array is tabular data: a single image is a stack of one
        ((6, 6), None, r"X\[None\]"),
    ],
)
def test_layouts_that_contradict_channel_axis_are_refused(name, shape, channel_axis, match):
    with pytest.raises(ValueError, match=match):
        LAYOUT_ESTIMATORS[name](channel_axis=channel_axis).fit(np.zeros(shape))


@pytest.mark.parametrize("name", sorted(LAYOUT_ESTIMATORS))
def test_channel_axis_is_validated_as_a_parameter(name):
    with pytest.raises(ValueError, match="channel_axis"):
        LAYOUT_ESTIMATORS[name](channel_axis="first").fit(np.zeros((2, 6, 6)))
