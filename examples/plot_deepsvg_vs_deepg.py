"""
deepG and deepSVG: one mixing weight per image, or one per pixel
================================================================

:class:`~skdgmm.DeepGaussianMixture` has two models of the mixing weights.
With ``spatially_variant=False`` (deepG) the likelihood of a pixel is
``sum_k pi_k N(x; mu_k, Sigma_k)`` with one weight ``pi_k`` per component and
image; with ``spatially_variant=True`` (deepSVG) the network's own
responsibilities ``w[x, k]`` are the weights of pixel ``x``: the spatially
variant Gaussian mixture, whose weights vary smoothly over the image.

Both are fitted here on one noisy synthetic image of three classes, next to
scikit-learn's :class:`~sklearn.mixture.GaussianMixture`, whose posteriors
are also smoothed by a Gaussian filter of 2 pixels (the cheap spatial prior
the networks have to beat), and their probability maps and uncertainty (the
entropy of each pixel's posterior) are compared.
"""

import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage
from sklearn.mixture import GaussianMixture

from skdgmm import DeepGaussianMixture, PixelwiseMixture
from skdgmm.datasets import make_segmentation_images
from skdgmm.metrics import match_labels
from skdgmm.plotting import plot_loss_curve, plot_overlay, plot_probabilities

images, truth = make_segmentation_images(1, (64, 64), noise=0.6, random_state=0)
models = {
    "GaussianMixture (EM)": PixelwiseMixture(GaussianMixture(3, random_state=0)),
    "deepG": DeepGaussianMixture(3, random_state=0, device="cpu"),
    "deepSVG": DeepGaussianMixture(
        3, spatially_variant=True, random_state=0, device="cpu"
    ),
}

em_proba = models["GaussianMixture (EM)"].fit(images).predict_proba(images)
probabilities = {
    "GaussianMixture (EM)": em_proba,
    # EM's posteriors smoothed over 2 pixels of each image
    "EM, smoothed": ndimage.gaussian_filter(em_proba, (0, 2, 2, 0)),
    **{
        name: models[name].fit(images).predict_proba(images)
        for name in ["deepG", "deepSVG"]
    },
}

fig, axes = plt.subplots(1, 5, figsize=(16, 4.1), layout="constrained")
plot_overlay(images[0], truth[0], ax=axes[0], title="ground truth")
for ax, (name, proba) in zip(axes[1:], probabilities.items()):
    matched = match_labels(truth, proba.argmax(-1), [0, 1, 2], [0, 1, 2])
    accuracy = np.mean(matched == truth)
    print(f"{name}: {accuracy:.1%} of the pixels right")
    plot_overlay(images[0], matched[0], ax=ax, title=f"{name}\naccuracy {accuracy:.1%}")
plt.show()

# %%
# On this one image deepG gets about a point more pixels right than smoothed
# EM (94.0 % against 93.2 % when this was written) and deepSVG about as many,
# at many times the cost; plain EM is far behind.
#
# Probability maps
# ----------------
# EM's posteriors change from pixel to pixel with the noise; smoothed, they
# vary as slowly as the networks' maps, which are uncertain only along the
# edges between regions.
for name, proba in probabilities.items():
    axes = plot_probabilities(proba[0])
    axes[0].figure.suptitle(name)
plt.show()

# %%
# Training curves
# ---------------
# The loss (mixture energy plus the Potts term) falls while the
# log-likelihood per pixel may fall a little too: the spatial prior, not the
# likelihood, moves the labels. deepSVG's likelihood, under pixel-wise
# weights, is higher than deepG's.
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
for ax, name in zip(axes, ["deepG", "deepSVG"]):
    plot_loss_curve(models[name], ax=ax)
    ax.set_title(name)
plt.show()
