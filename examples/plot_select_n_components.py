"""
Choose the number of classes with BIC
=====================================

How many classes are there? As with
:class:`~sklearn.mixture.GaussianMixture`, the Bayesian information criterion
of the fitted mixture answers it (lower is better), and
:func:`skdgmm.metrics.bic_scorer` turns it into a score for
:class:`~sklearn.model_selection.GridSearchCV`. Pixels count as samples, but
cross-validation splits whole images, because axis 0 of an image stack
indexes images.

The model is a pipeline: :class:`~skdgmm.SpatialFeatures` can add a smoothed
intensity to every pixel before :class:`~skdgmm.DeepGaussianMixture`
segments the images. ``bic_scorer`` passes the held-out images through the
pipeline's transformers before asking the mixture for its BIC.

BIC judges how well the Gaussians describe the pixels, and the Potts prior
(``spatial_regularization``) trades some of that likelihood for coherent
regions: with the default prior, a fourth component that labels no pixel
still raises the likelihood of the smoothed model, and the search picks 4.
So the search compares mixtures without the prior
(``spatial_regularization=0``, the likelihood alone, as GaussianMixture's BIC
does), and the chosen K is then fitted with it.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skdgmm import DeepGaussianMixture, SpatialFeatures
from skdgmm.datasets import make_segmentation_images
from skdgmm.metrics import bic_scorer
from skdgmm.plotting import plot_overlay

# few training iterations keep the example fast; some end before the
# stopping criterion is met
warnings.simplefilter("ignore", ConvergenceWarning)

images, truth = make_segmentation_images(6, (32, 32), n_classes=3, random_state=0)


def search_n_components(features):
    """GridSearchCV over the number of components of features + mixture."""
    pipe = Pipeline(
        [
            ("features", features),
            (
                "mixture",
                DeepGaussianMixture(
                    spatial_regularization=0, max_iter=50, random_state=0, device="cpu"
                ),
            ),
        ]
    )
    grid = {"mixture__n_components": [1, 2, 3, 4, 5]}
    return GridSearchCV(pipe, grid, scoring=bic_scorer, cv=3).fit(images)


# %%
# The search on the intensities alone (the features step switched off) and on
# intensity plus smoothed intensity.
searches = {
    "intensity": search_n_components("passthrough"),
    "intensity + smoothed": search_n_components(
        SpatialFeatures(sigmas=(1.0,), local_std=False, edges=False)
    ),
}
for name, search in searches.items():
    print(f"{name}: best {search.best_params_}")

fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
for ax, (name, search) in zip(axes, searches.items()):
    results = search.cv_results_
    k = np.asarray(results["param_mixture__n_components"], dtype=int)
    ax.errorbar(k, -results["mean_test_score"], yerr=results["std_test_score"])
    ax.plot(k, -results["mean_test_score"], "o")
    ax.set(xlabel="n_components", ylabel="BIC on held-out images", xticks=k)
    ax.set_title(name)
plt.show()

# %%
# On the intensities, the BIC is lowest at the three classes the images were
# made of. With the smoothed intensity it is lowest at 4: pixels near an edge
# have a smoothed value between two classes, and BIC counts the components
# of the feature distribution, not the classes of the image. Choose K on the
# features that a Gaussian per class describes well.
#
# The best K on the intensities, fitted with the spatial prior:
best = searches["intensity"].best_params_["mixture__n_components"]
labels = DeepGaussianMixture(best, random_state=0, device="cpu").fit_predict(images)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.8), layout="constrained")
for i, ax in enumerate(axes):
    plot_overlay(images[i], labels[i], ax=ax, title=f"image {i}")
plt.show()
