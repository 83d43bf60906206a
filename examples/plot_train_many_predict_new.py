"""
Train on many images, label new ones in one pass
================================================

A :class:`~skdgmm.DeepGaussianMixture` fitted on a stack of images is one
network for all of them: it labels an image it has never seen in one forward
pass, with no EM iterations, and it gives the same class the same label in
every image.

Here the model is trained on 16 synthetic images and labels 4 new ones.
scikit-learn's :class:`~sklearn.mixture.GaussianMixture`, fitted on the
pixels of the same 16 images, labels them too, once from its posteriors as
they are and once from its posteriors smoothed by a Gaussian filter of 2
pixels (:func:`scipy.ndimage.gaussian_filter`, then the most probable
class): the cheap spatial prior that the network has to beat.
"""

import time

import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage
from sklearn.mixture import GaussianMixture

from skdgmm import DeepGaussianMixture, PixelwiseMixture
from skdgmm.datasets import make_segmentation_images
from skdgmm.metrics import match_labels
from skdgmm.plotting import plot_loss_curve, plot_overlay

images, truth = make_segmentation_images(20, (48, 48), noise=0.6, random_state=0)
train, new = images[:16], images[16:]
train_truth, new_truth = truth[:16], truth[16:]

em = PixelwiseMixture(GaussianMixture(3, random_state=0))
deep = DeepGaussianMixture(3, random_state=0, device="cpu")
for name, model in [("GaussianMixture", em), ("DeepGaussianMixture", deep)]:
    start = time.perf_counter()
    model.fit(train)
    print(f"{name}: trained in {time.perf_counter() - start:.1f} s")


def smoothed(images, sigma=2.0):
    """EM's labels from its posteriors smoothed over each image."""
    proba = em.predict_proba(images)
    return ndimage.gaussian_filter(proba, (0, sigma, sigma, 0)).argmax(-1)


methods = {
    "GaussianMixture": em.predict,
    "GaussianMixture, smoothed": smoothed,
    "DeepGaussianMixture": deep.predict,
}
predicted = {}
for name, label in methods.items():
    start = time.perf_counter()
    labels = label(new)
    labelled = time.perf_counter() - start
    # cluster ids are arbitrary; one matching to the classes on the training
    # images names them for every new image, as a label means the same class
    # in all images
    clusters = label(train)
    names = np.empty(3, dtype=int)
    names[clusters] = match_labels(train_truth, clusters, [0, 1, 2], [0, 1, 2])
    predicted[name] = names[labels]
    accuracy = np.mean(predicted[name] == new_truth)
    print(
        f"{name}: labelled 4 new images in {labelled:.2f} s, "
        f"{accuracy:.1%} of their pixels right"
    )

# %%
# The new images, their ground truth and the three segmentations. Plain EM
# labels each pixel on its own and gets the noisy ones wrong (about 72 % of
# the pixels right). With its posteriors smoothed over 2 pixels it labels the
# new images as well as the network or better (94.0 % against 92.6 % when
# this was written), in a fraction of the time. A mixture fitted on the
# pooled pixels of the training images also keeps its class numbers in every
# image, as long as the images share their intensities, as these do. What
# the network brings here is a spatial prior learnt from the training images
# (classes come in blobs) instead of a filter width chosen by hand; on these
# images it is not more accurate.
fig, axes = plt.subplots(4, 4, figsize=(10, 12.4), layout="constrained")
for i in range(4):
    plot_overlay(new[i], new_truth[i], ax=axes[0, i], title=f"new image {i}")
    for row, (name, labels) in zip(axes[1:], predicted.items()):
        accuracy = np.mean(labels[i] == new_truth[i])
        plot_overlay(new[i], labels[i], ax=row[i], title=f"{name}\n{accuracy:.1%}")
plt.show()

# %%
# The training of the network: the loss over the 16 images.
plot_loss_curve(deep)
plt.show()
