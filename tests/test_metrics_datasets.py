"""Metrics, scorers and data sets."""

import numpy as np
import pytest
import sklearn
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdgmm import DeepGaussianMixture, SpatialFeatures
from skdgmm.datasets import load_mni152, load_nuclei, make_segmentation_images
from skdgmm.metrics import bic_scorer, dice_score, match_labels

from .conftest import FAST


def test_dice_score():
    y = np.array([0, 0, 1, 1, 2])
    assert_allclose(dice_score(y, y, [0, 1, 2]), 1.0)
    assert_allclose(dice_score(y, np.array([0, 1, 1, 1, 2]), [0, 1]), [2 / 3, 0.8])
    assert np.isnan(dice_score(y, y, [7])[0])


def test_match_labels_is_invariant_to_cluster_names(rng):
    truth = rng.randint(3, size=200)
    clusters = np.array([5, 9, 7])[truth]  # renamed, otherwise identical
    assert_array_equal(match_labels(truth, clusters, [0, 1, 2], [5, 9, 7]), truth)
    # an absent label is matched to an absent cluster
    matched = match_labels(truth, clusters, [0, 1, 2, 3], [5, 9, 7, 8])
    assert_array_equal(matched, truth)
    # unsigned predictions (a thresholded mask, say) can take the -1
    binary = (truth > 0).astype(np.uint8)
    assert_array_equal(match_labels(binary, binary, [1], [1]), np.where(binary, 1, -1))


def test_bic_scorer_is_negative_bic_also_in_a_pipeline(rng):
    X = rng.standard_normal((100, 2))
    gm = GaussianMixture(2, random_state=0).fit(X)
    assert bic_scorer(gm, X) == pytest.approx(-gm.bic(X))
    pipe = make_pipeline(StandardScaler(), GaussianMixture(2, random_state=0)).fit(X)
    assert bic_scorer(pipe, X) == pytest.approx(-pipe[-1].bic(pipe[0].transform(X)))


FAST_MODEL = dict(FAST, max_iter=2, init_iter=2)


@pytest.fixture
def masked_images():
    X, labels = make_segmentation_images(3, (20, 17), noise=0.2, random_state=0)
    return X, labels > 0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("pipeline", [False, True])
def test_grid_search_routes_the_mask_to_bic_scorer(masked_images, pipeline):
    """GridSearchCV fitted with a mask scored BIC on every pixel."""
    X, mask = masked_images
    cv = KFold(3)
    with sklearn.config_context(enable_metadata_routing=True):
        model = DeepGaussianMixture(**FAST_MODEL).set_fit_request(mask=True)
        if pipeline:
            features = SpatialFeatures(sigmas=(1.0,)).set_fit_request(mask=True)
            model = make_pipeline(features.set_transform_request(mask=True), model)
            grid = {"deepgaussianmixture__n_components": [2, 3]}
        else:
            grid = {"n_components": [2, 3]}
        search = GridSearchCV(model, grid, scoring=bic_scorer, cv=cv, error_score="raise")
        search.fit(X, mask=mask)
        for i, params in enumerate(search.cv_results_["params"]):
            for split, (train, test) in enumerate(cv.split(X)):
                fitted = clone(model).set_params(**params).fit(X[train], mask=mask[train])
                expected = bic_scorer(fitted, X[test], mask=mask[test])
                assert expected != bic_scorer(fitted, X[test], mask=np.ones_like(mask[test]))
                got = search.cv_results_[f"split{split}_test_score"][i]
                assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_bic_scorer_refuses_a_model_fitted_with_a_mask_without_one(masked_images):
    X, mask = masked_images
    search = GridSearchCV(
        DeepGaussianMixture(**FAST_MODEL),
        {"n_components": [2, 3]},
        scoring=bic_scorer,
        cv=KFold(3),
        error_score="raise",
    )
    # without metadata routing the scorer gets no mask
    with pytest.raises(ValueError, match="fitted with a mask.*enable_metadata_routing"):
        search.fit(X, mask=mask)
    model = DeepGaussianMixture(2, **FAST_MODEL).fit(X, mask=mask)
    with pytest.raises(ValueError, match="fitted with a mask"):
        bic_scorer(model, X)
    assert bic_scorer(model, X, mask=mask) == -model.bic(X, mask=mask)
    # a model fitted without a mask scores every pixel, as before
    model = DeepGaussianMixture(2, **FAST_MODEL).fit(X)
    assert bic_scorer(model, X) == -model.bic(X)


@pytest.mark.parametrize(
    "shape, n_channels", [((16, 12), 1), ((16, 12), 2), ((6, 7, 8), 1)]
)
def test_make_segmentation_images(shape, n_channels):
    images, labels = make_segmentation_images(
        3, shape, n_classes=3, n_channels=n_channels, noise=0.0, random_state=0
    )
    assert labels.shape == (3, *shape)
    assert images.shape == labels.shape + ((n_channels,) if n_channels > 1 else ())
    first = images if n_channels == 1 else images[..., 0]
    assert_array_equal(first, labels)  # no noise: class k has intensity k
    again, _ = make_segmentation_images(
        3, shape, n_classes=3, n_channels=n_channels, random_state=0
    )
    assert_array_equal(
        make_segmentation_images(
            3, shape, n_classes=3, n_channels=n_channels, random_state=0
        )[0],
        again,
    )


@pytest.mark.parametrize(
    "shape, n_channels", [((16, 12), 1), ((16, 12), 3), ((6, 7, 8), 2)]
)
def test_bias_field_is_smooth_multiplicative_and_reproducible(shape, n_channels):
    params = dict(n_classes=3, n_channels=n_channels, noise=0.0, random_state=0)
    clean, labels = make_segmentation_images(3, shape, **params)
    biased, biased_labels = make_segmentation_images(3, shape, bias_field=0.4, **params)
    assert_array_equal(biased_labels, labels)
    # one gain per pixel, shared by the channels, within exp(+-0.4)
    gain = biased[clean != 0] / clean[clean != 0]
    assert (gain >= np.exp(-0.4) - 1e-12).all() and (gain <= np.exp(0.4) + 1e-12).all()
    assert gain.std() > 0.05
    if n_channels > 1:
        ratios = biased[..., 0] / np.where(clean[..., 0] == 0, 1, clean[..., 0])
        other = biased[..., 1] / np.where(clean[..., 1] == 0, 1, clean[..., 1])
        both = (clean[..., 0] != 0) & (clean[..., 1] != 0)
        assert_allclose(ratios[both], other[both])
    # smooth: neighbouring pixels have nearly the same gain
    field = biased[..., 0] if n_channels > 1 else biased
    base = clean[..., 0] if n_channels > 1 else clean
    log_gain = np.zeros(base.shape)
    log_gain[base != 0] = np.log(field[base != 0] / base[base != 0])
    inside = (base[:, 1:] != 0) & (base[:, :-1] != 0)
    assert np.abs(np.diff(log_gain, axis=1)[inside]).max() < 0.2
    again, _ = make_segmentation_images(3, shape, bias_field=0.4, **params)
    assert_array_equal(again, biased)


def test_load_nuclei():
    image, labels = load_nuclei()
    assert image.shape == labels.shape == (256, 256)
    assert 0 <= image.min() and image.max() <= 1
    assert 0.05 < labels.mean() < 0.5


def test_load_mni152():
    images, labels, mask = load_mni152()
    assert images.shape == labels.shape == mask.shape == (3, 233, 197)
    assert mask.dtype == bool and 0 <= images.min() and images.max() <= 1
    assert_array_equal(labels > 0, mask)
    # every tissue in every slice; white matter brighter than grey, than CSF
    means = [[images[i][labels[i] == k].mean() for k in (1, 2, 3)] for i in range(3)]
    assert all(csf < grey < white for csf, grey, white in means)
