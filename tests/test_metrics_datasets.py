"""Metrics, scorers and data sets."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdgmm.datasets import load_nuclei, make_segmentation_images
from skdgmm.metrics import bic_scorer, dice_score, match_labels


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


def test_load_nuclei():
    image, labels = load_nuclei()
    assert image.shape == labels.shape == (256, 256)
    assert 0 <= image.min() and image.max() <= 1
    assert 0.05 < labels.mean() < 0.5
