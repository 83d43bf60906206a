"""
Segment a 3-D volume
====================

With ``spatial_dims=3``, :class:`~skdgmm.DeepGaussianMixture` takes stacks of
volumes ``(n_volumes, depth, height, width[, n_channels])`` and its network
is a 3-D U-Net: the neighbourhood of a voxel extends across slices. Here one
noisy synthetic volume of three classes is segmented, and a few of its
slices are shown next to the ground truth and to
:class:`~sklearn.mixture.GaussianMixture` on the same voxels, with its
posteriors as they are and smoothed by a 3-D Gaussian filter of 2 voxels.
"""

import time

import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage
from sklearn.mixture import GaussianMixture

from skdgmm import DeepGaussianMixture, PixelwiseMixture
from skdgmm.datasets import make_segmentation_images
from skdgmm.metrics import match_labels
from skdgmm.plotting import plot_overlay

volumes, truth = make_segmentation_images(
    1, (16, 40, 40), noise=0.6, smoothness=3.0, random_state=0
)
print("volume stack:", volumes.shape)

em = PixelwiseMixture(GaussianMixture(3, random_state=0), spatial_dims=3)
# with the default spatial_regularization=4.0 the Potts term merges one class
# into its neighbours on this small volume (the model warns that a component
# is empty, and gets 72 % of the voxels right); a weaker one, as the warning
# advises, keeps the three classes
deep = DeepGaussianMixture(
    3, spatial_dims=3, spatial_regularization=1.0, random_state=0, device="cpu"
)


def smoothed_em(volumes, sigma=2.0):
    """EM's labels from its posteriors smoothed in 3-D by a Gaussian filter."""
    proba = em.fit(volumes).predict_proba(volumes)
    return ndimage.gaussian_filter(proba, (0, sigma, sigma, sigma, 0)).argmax(-1)


methods = {
    "GaussianMixture": em.fit_predict,
    "GaussianMixture, smoothed": smoothed_em,
    "DeepGaussianMixture": deep.fit_predict,
}
segmentations = {"ground truth": truth[0]}
for name, segment in methods.items():
    start = time.perf_counter()
    labels = segment(volumes)
    seconds = time.perf_counter() - start
    labels = match_labels(truth, labels, [0, 1, 2], [0, 1, 2])
    print(
        f"{name}: {np.mean(labels == truth):.1%} of the voxels right in {seconds:.1f} s"
    )
    segmentations[name] = labels[0]

# %%
# Three slices (rows: ground truth, EM, smoothed EM, the deep model). The
# deep model's label maps are coherent from one slice to the next, as the
# network sees the volume in 3-D; so are those of smoothed EM, whose filter
# is 3-D too, and on this volume smoothed EM gets more voxels right (89 %
# against 86 % when this was written) in a fraction of the time.
slices = [4, 8, 12]
fig, axes = plt.subplots(4, 3, figsize=(8, 12), layout="constrained")
for row, (name, labels) in zip(axes, segmentations.items()):
    for ax, z in zip(row, slices):
        plot_overlay(volumes[0, z], labels[z], ax=ax, title=f"{name}, slice {z}")
plt.show()
