"""scikit-learn's estimator checks, with no expected failures."""

import pytest
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
from sklearn.utils.estimator_checks import (
    check_param_validation,
    parametrize_with_checks,
)

from skdgmm import DeepGaussianMixture, PixelwiseMixture, SpatialFeatures
from skdgmm.svgmm import SpatiallyVariantGaussianMixture

# Checks with failures we accept, each with its reason; kept empty on purpose.
EXPECTED_FAILED_CHECKS: dict = {}

ESTIMATORS = [
    DeepGaussianMixture(random_state=0, device="cpu"),
    DeepGaussianMixture(
        covariance_type="diag", spatially_variant=True, random_state=0, device="cpu"
    ),
    PixelwiseMixture(GaussianMixture(random_state=0)),
    PixelwiseMixture(KMeans(n_clusters=1, n_init=1, random_state=0)),
    SpatiallyVariantGaussianMixture(random_state=0),
    SpatialFeatures(),
]


@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=repr)
def test_param_validation(estimator):
    # not collected by parametrize_with_checks
    check_param_validation(type(estimator).__name__, estimator)
