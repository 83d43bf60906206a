"""EM for the spatially variant Gaussian mixture."""

import numpy as np
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from skdgmm.svgmm import SpatiallyVariantGaussianMixture


def test_em_increases_likelihood_and_labels_like_gmm(images):
    X, _ = images
    mask = np.ones(X.shape, bool)
    mask[:, :2] = False
    gmm = GaussianMixture(3, random_state=0).fit(X[mask][:, None])
    model = SpatiallyVariantGaussianMixture(3, random_state=0)
    labels = model.fit_predict(X, mask=mask)
    assert (labels[~mask] == -1).all()
    # per-pixel weights can only fit the pixels better than shared ones
    assert model.lower_bound_ >= gmm.score(X[mask][:, None])
    assert adjusted_rand_score(gmm.predict(X[mask][:, None]), labels[mask]) > 0.9
    assert model.resp_.shape == (mask.sum(), 3)
    assert model.predict(X, mask=mask).shape == X.shape
