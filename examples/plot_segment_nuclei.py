"""
Segment fluorescent nuclei and compare with EM
==============================================

The bundled image (2018 Data Science Bowl, CC0) is segmented into two classes
by :class:`~skdgmm.DeepGaussianMixture` and by scikit-learn's
:class:`~sklearn.mixture.GaussianMixture` on the same pixels. Dice against
the ground truth is printed, and both label maps are shown over the image.
"""

import matplotlib.pyplot as plt
from sklearn.mixture import GaussianMixture

from skdgmm import DeepGaussianMixture, PixelwiseMixture
from skdgmm.datasets import load_nuclei
from skdgmm.metrics import dice_score, match_labels

image, truth = load_nuclei()
models = {
    "GaussianMixture": PixelwiseMixture(GaussianMixture(2, random_state=0)),
    "DeepGaussianMixture": DeepGaussianMixture(2, random_state=0),
}

fig, axes = plt.subplots(1, 3, figsize=(12, 4))
axes[0].imshow(image, cmap="gray")
axes[0].set_title("image")
for ax, (name, model) in zip(axes[1:], models.items()):
    labels = match_labels(truth, model.fit_predict(image[None])[0], [0, 1], [0, 1])
    dice = dice_score(truth, labels, [1])[0]
    print(f"{name}: nucleus Dice {dice:.3f}")
    ax.imshow(image, cmap="gray")
    ax.contour(labels, levels=[0.5], colors="tab:orange", linewidths=0.8)
    ax.set_title(f"{name}\nDice {dice:.3f}")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()
