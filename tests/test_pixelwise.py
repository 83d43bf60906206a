"""PixelwiseMixture: any sklearn model on the pixels of image stacks."""

import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from skdgmm import PixelwiseMixture

from .test_mixture import LAYOUTS


@pytest.mark.parametrize("shape, spatial_dims, label_shape", LAYOUTS)
def test_layouts_and_masks_match_gaussian_mixture_on_pixels(
    rng, shape, spatial_dims, label_shape
):
    X = rng.standard_normal(shape)
    mask = rng.uniform(size=label_shape) < 0.7
    model = PixelwiseMixture(
        GaussianMixture(2, random_state=0), spatial_dims=spatial_dims
    )
    labels = model.fit_predict(X, mask=mask)
    assert labels.shape == label_shape and (labels[~mask] == -1).all()

    n_channels = model.n_features_in_
    pixels = (
        X.reshape(-1, n_channels)
        if len(shape) in (2, spatial_dims + 2)
        else X[..., None]
    )
    pixels = pixels.reshape(label_shape + (n_channels,))[mask]
    reference = GaussianMixture(2, random_state=0).fit(pixels)
    assert_array_equal(labels[mask], reference.predict(pixels))
    proba = model.predict_proba(X, mask=mask)
    assert proba.shape == label_shape + (2,) and (proba[~mask] == 0).all()
    assert_allclose(
        model.score_samples(X, mask=mask)[mask], reference.score_samples(pixels)
    )
    assert model.bic(X, mask=mask) == pytest.approx(reference.bic(pixels))
    assert model.score(X, mask=mask) == pytest.approx(reference.score(pixels))


def test_methods_follow_the_wrapped_estimator(images):
    X, _ = images
    model = PixelwiseMixture(KMeans(3, n_init=1, random_state=0)).fit(X)
    assert model.predict(X).shape == X.shape
    assert not hasattr(model, "predict_proba") and not hasattr(model, "bic")
    assert hasattr(PixelwiseMixture(GaussianMixture()), "bic")
