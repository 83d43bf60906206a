"""
Train on many images, label new ones in one pass
================================================

A :class:`~skdgmm.DeepGaussianMixture` fitted on a stack of images is one
network for all of them: it labels an image it has never seen in one forward
pass, with no EM iterations, and it gives the same class the same label in
every image.

Here the model is trained on 16 synthetic images and labels 4 new ones;
scikit-learn's :class:`~sklearn.mixture.GaussianMixture`, fitted on the
pixels of the same 16 images, labels them too.
"""

import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.mixture import GaussianMixture

from skdgmm import DeepGaussianMixture, PixelwiseMixture
from skdgmm.datasets import make_segmentation_images
from skdgmm.metrics import match_labels
from skdgmm.plotting import plot_loss_curve, plot_overlay

images, truth = make_segmentation_images(20, (48, 48), noise=0.6, random_state=0)
train, new = images[:16], images[16:]
train_truth, new_truth = truth[:16], truth[16:]

models = {
    "GaussianMixture": PixelwiseMixture(GaussianMixture(3, random_state=0)),
    "DeepGaussianMixture": DeepGaussianMixture(3, random_state=0, device="cpu"),
}
predicted = {}
for name, model in models.items():
    start = time.perf_counter()
    model.fit(train)
    fitted = time.perf_counter() - start
    start = time.perf_counter()
    labels = model.predict(new)
    labelled = time.perf_counter() - start
    # cluster ids are arbitrary; one matching to the classes on the training
    # images names them for every new image, as a label means the same class
    # in all images
    clusters = model.predict(train)
    names = np.empty(3, dtype=int)
    names[clusters] = match_labels(train_truth, clusters, [0, 1, 2], [0, 1, 2])
    predicted[name] = names[labels]
    accuracy = np.mean(predicted[name] == new_truth)
    print(
        f"{name}: trained in {fitted:.1f} s, labelled 4 new images in "
        f"{labelled:.2f} s, {accuracy:.1%} of their pixels right"
    )

# %%
# The new images, their ground truth and the two segmentations. The deep
# model's regions are cleaner: it learnt from the training images that
# classes come in blobs.
fig, axes = plt.subplots(3, 4, figsize=(10, 9.4), layout="constrained")
for i in range(4):
    plot_overlay(new[i], new_truth[i], ax=axes[0, i], title=f"new image {i}")
    for row, (name, labels) in zip(axes[1:], predicted.items()):
        accuracy = np.mean(labels[i] == new_truth[i])
        plot_overlay(new[i], labels[i], ax=row[i], title=f"{name}\n{accuracy:.1%}")
plt.show()

# %%
# The training of the network: the loss over the 16 images.
plot_loss_curve(models["DeepGaussianMixture"])
plt.show()
