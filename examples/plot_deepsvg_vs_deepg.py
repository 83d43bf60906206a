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
scikit-learn's :class:`~sklearn.mixture.GaussianMixture`, and their
probability maps and uncertainty (the entropy of each pixel's posterior) are
compared.
"""

import matplotlib.pyplot as plt
import numpy as np
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

fig, axes = plt.subplots(1, 4, figsize=(13, 4.1), layout="constrained")
plot_overlay(images[0], truth[0], ax=axes[0], title="ground truth")
for ax, (name, model) in zip(axes[1:], models.items()):
    labels = model.fit_predict(images)
    matched = match_labels(truth, labels, [0, 1, 2], [0, 1, 2])
    accuracy = np.mean(matched == truth)
    print(f"{name}: {accuracy:.1%} of the pixels right")
    plot_overlay(images[0], matched[0], ax=ax, title=f"{name}\naccuracy {accuracy:.1%}")
plt.show()

# %%
# Probability maps
# ----------------
# EM's posteriors change from pixel to pixel with the noise; the networks
# give smooth maps, uncertain only along the edges between regions.
for name, model in models.items():
    axes = plot_probabilities(model.predict_proba(images)[0])
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
