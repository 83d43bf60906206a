"""SpatialFeatures: neighbourhood features for tabular data and image stacks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks

from skdgmm import DeepGaussianMixture, SpatialFeatures

from .conftest import FAST

SET_OUTPUT_CHECKS = [
    name
    for name in (
        "check_set_output_transform",
        "check_set_output_transform_pandas",
        "check_global_output_transform_pandas",
        "check_set_output_transform_polars",
        "check_global_set_output_transform_polars",
    )
    if hasattr(estimator_checks, name)
]


@pytest.mark.parametrize("check", SET_OUTPUT_CHECKS)
def test_set_output_checks(check):
    # not collected by parametrize_with_checks
    getattr(estimator_checks, check)("SpatialFeatures", SpatialFeatures())


def test_tabular_data_passes_through_with_its_names(rng):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(rng.standard_normal((10, 2)), columns=["a", "b"])
    features = SpatialFeatures().set_output(transform="pandas").fit_transform(X)
    assert list(features.columns) == ["a", "b"]
    assert_allclose(features.to_numpy(), X.to_numpy())


@pytest.mark.parametrize(
    "shape, spatial_dims", [((2, 12, 9), 2), ((2, 12, 9, 2), 2), ((2, 5, 6, 7), 3)]
)
def test_images_get_a_feature_axis_and_names(rng, shape, spatial_dims):
    X = rng.standard_normal(shape)
    model = SpatialFeatures(sigmas=(1, 2), coordinates=True, spatial_dims=spatial_dims)
    features = model.fit_transform(X)
    names = model.get_feature_names_out()
    pixel_shape = shape[: 1 + spatial_dims]
    assert features.shape == pixel_shape + (len(names),)
    n_channels = model.n_features_in_
    assert len(names) == n_channels * 7 + spatial_dims
    assert names[0] == "x0_intensity" and names[-1] == f"coordinate_{spatial_dims - 1}"
    first = X if X.ndim == 1 + spatial_dims else X[..., 0]
    assert_allclose(features[..., 0], first)
    assert np.isfinite(features).all()


def test_constant_image_has_no_texture_or_edges():
    features = SpatialFeatures(sigmas=(2,)).fit_transform(np.full((1, 16, 16), 3.0))
    assert_allclose(features[..., :2], 3.0)  # intensity and smoothed
    assert_allclose(features[..., 2:], 0.0, atol=1e-12)  # std and edges


def test_pixels_outside_the_mask_never_leak_in(rng):
    X = rng.standard_normal((1, 20, 20))
    mask = np.zeros(X.shape, bool)
    mask[:, 5:15, 5:15] = True
    model = SpatialFeatures(sigmas=(2,)).fit(X)
    before = model.transform(X, mask=mask)
    changed = X.copy()
    changed[~mask] = 1e6
    after = model.transform(changed, mask=mask)
    assert_allclose(after, before)
    assert (after[~mask] == 0).all()


def test_pipeline_with_deep_mixture(images):
    X, _ = images
    pipe = make_pipeline(SpatialFeatures(sigmas=(1,)), DeepGaussianMixture(3, **FAST))
    labels = pipe.fit_predict(X)
    assert labels.shape == X.shape
    assert_array_equal(pipe.predict(X), labels)


def test_bad_sigmas():
    with pytest.raises(ValueError, match="sigmas must be positive"):
        SpatialFeatures(sigmas=(1, -2)).fit(np.zeros((1, 4, 4)))


@settings(max_examples=60, deadline=None)
@given(
    sigmas=st.lists(
        st.one_of(st.floats(), st.integers(-3, 3)), min_size=1, max_size=3
    )
)
def test_sigmas_are_finite_positive_numbers_or_refused_at_fit(sigmas):
    X = np.random.RandomState(0).rand(2, 7, 6)
    model = SpatialFeatures(sigmas=tuple(sigmas))
    if all(np.isfinite(sigma) and sigma > 0 for sigma in sigmas):
        # huge and tiny ones too
        assert np.isfinite(model.fit_transform(X)).all()
    else:
        # NaN was accepted, infinity crashed in scipy (OverflowError)
        with pytest.raises(ValueError, match="sigmas must be positive finite"):
            model.fit(X)


@pytest.mark.parametrize("sigmas", [(np.nan,), (np.inf,), ("a",), ((1, 2),)])
def test_sigmas_that_are_not_numbers_are_refused(sigmas):
    with pytest.raises(ValueError, match="sigmas must be positive finite"):
        SpatialFeatures(sigmas=sigmas).fit(np.zeros((1, 4, 4)))
