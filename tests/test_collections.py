"""Collections whose images differ in brightness and contrast:
rescale_intensity (by default "auto": where their ranges differ)."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from skdgmm import DeepGaussianMixture
from skdgmm._data import RANGE_SPREAD, ranges_differ
from skdgmm.datasets import make_segmentation_images
from skdgmm.metrics import match_labels

from .conftest import FAST

GAINS = np.array([1.0, 2.0, 0.5, 3.0, 1.5, 0.8])
OFFSETS = np.array([0.0, 1.0, -0.5, 2.0, 0.0, 0.3])


def _study():
    """Six images of three classes, each with its own gain and offset."""
    X, truth = make_segmentation_images(6, (32, 32), noise=0.15, random_state=0)
    return X * GAINS[:, None, None] + OFFSETS[:, None, None], truth


def test_one_model_names_the_classes_of_images_that_differ():
    X, truth = _study()
    accuracy = {}
    for rescale in (False, True):
        model = DeepGaussianMixture(
            3, rescale_intensity=rescale, random_state=0, device="cpu"
        )
        labels = model.fit_predict(X)
        # one matching for the whole collection: classes named once
        named = match_labels(truth.ravel(), labels.ravel(), [0, 1, 2], [0, 1, 2])
        accuracy[rescale] = (named == truth.ravel()).mean()
    assert accuracy[True] > 0.98
    assert accuracy[False] < 0.9


def test_a_new_image_is_mapped_by_its_own_range():
    X, _ = _study()
    model = DeepGaussianMixture(3, rescale_intensity=True, **FAST).fit(X)
    brighter = 2.0 * X + 1.0
    assert_array_equal(model.predict(brighter), model.predict(X))
    # the density of the input's values: the change of variables counted
    assert_allclose(
        model.score_samples(brighter), model.score_samples(X) - np.log(2.0), atol=1e-4
    )
    assert model.means_.shape == (3, 1)


def test_a_single_image_is_left_as_it_is(images):
    X, _ = images
    plain = DeepGaussianMixture(3, **FAST).fit(X[:1])
    rescaled = DeepGaussianMixture(3, rescale_intensity=True, **FAST).fit(X[:1])
    assert_array_equal(rescaled.predict_proba(X[:1]), plain.predict_proba(X[:1]))
    assert_allclose(rescaled.means_, plain.means_)


def test_channels_and_masks(rng):
    X = rng.standard_normal((3, 30, 30, 2)) * [1.0, 5.0] + [0.0, 10.0]
    mask = np.zeros(X.shape[:3], bool)
    mask[:, 2:10, 2:10] = True
    model = DeepGaussianMixture(2, rescale_intensity=True, **FAST).fit(X, mask=mask)
    labels = model.predict(X, mask=mask)
    assert (labels[~mask] == -1).all() and (labels[mask] >= 0).all()
    # pixels beyond the network's context around the mask change nothing
    other = X.copy()
    other[:, 20:] = 1e3
    assert_array_equal(model.predict(other, mask=mask), labels)


def test_tabular_data_is_not_rescaled(rng):
    X = rng.standard_normal((60, 2))
    plain = DeepGaussianMixture(2, **FAST).fit(X)
    rescaled = DeepGaussianMixture(2, rescale_intensity=True, **FAST).fit(X)
    assert_array_equal(rescaled.predict_proba(X), plain.predict_proba(X))


def _ranges(widths, centres):
    """Intensity ranges (N, 2, 1) of the given widths and centres."""
    widths, centres = np.asarray(widths, float), np.asarray(centres, float)
    return np.stack([centres - widths / 2, centres + widths / 2], axis=1)[..., None]


def test_ranges_differ_by_the_spread_of_their_widths_or_centres():
    alike = _ranges([1.0, 1.05, 0.95, 1.1], [0.0, 0.02, -0.03, 0.01])
    assert not ranges_differ(alike)
    # interquartile range of the log widths: log 1.5 > 0.3 > log 1.3
    assert ranges_differ(_ranges([1.0, 1.0, 1.5, 1.5], [0.0] * 4))
    assert not ranges_differ(_ranges([1.0, 1.0, 1.3, 1.3], [0.0] * 4))
    # of the centres, in typical widths
    shift = 2 * RANGE_SPREAD
    assert ranges_differ(_ranges([1.0] * 4, [0.0, 0.0, shift, shift]))
    # an image without pixels (NaN), a flat one (width 0), a single image
    assert not ranges_differ(np.concatenate([alike, np.full((1, 2, 1), np.nan)]))
    assert not ranges_differ(_ranges([0.0, 1.0, 1.0, 1.0], [5.0, 0.0, 0.0, 0.0])[1:])
    assert not ranges_differ(_ranges([0.1], [7.0]))
    # any channel
    assert ranges_differ(
        np.concatenate([alike, _ranges([1.0, 1.0, 2.0, 2.0], [0.0] * 4)], -1)
    )


def test_a_channel_flat_in_every_image_is_not_a_difference(images):
    """It gave "All-NaN slice" RuntimeWarnings at the default "auto"."""
    X, _ = images
    X = np.stack([X, np.zeros_like(X)], axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = DeepGaussianMixture(2, **FAST).fit(X)
    assert model._intensity_rescaling is None


@pytest.mark.parametrize("study", [True, False])
def test_auto_rescales_the_images_of_a_study_that_differ(images, study):
    X = _study()[0] if study else images[0]
    auto = DeepGaussianMixture(3, **FAST).fit(X)
    chosen = DeepGaussianMixture(3, rescale_intensity=study, **FAST).fit(X)
    assert (auto._intensity_rescaling is not None) is study
    assert_array_equal(auto.predict_proba(X), chosen.predict_proba(X))


def test_auto_leaves_the_images_alone_where_init_parameters_are_given():
    """``*_init`` are in the input's units: "auto" does not reinterpret them."""
    X, _ = _study()
    means = np.array([[0.0], [1.0], [2.0]])
    model = DeepGaussianMixture(3, means_init=means, **FAST).fit(X)
    assert model._intensity_rescaling is None


def test_warm_start_keeps_the_rescaling_it_was_fitted_with(images):
    X, _ = images
    model = DeepGaussianMixture(3, warm_start=True, **FAST).fit(_study()[0])
    # "auto" continues what it chose, on other images too
    assert model._intensity_rescaling is not None
    model.fit(X)
    assert model._intensity_rescaling is not None
    model = DeepGaussianMixture(3, warm_start=True, **FAST).fit(X)
    with pytest.raises(ValueError, match="rescale_intensity is False"):
        model.set_params(rescale_intensity=True).fit(X)
