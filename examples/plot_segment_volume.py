"""
Segment a 3-D volume
====================

With ``spatial_dims=3``, :class:`~skdgmm.DeepGaussianMixture` takes stacks of
volumes ``(n_volumes, depth, height, width[, n_channels])`` and its network
is a 3-D U-Net: the neighbourhood of a voxel extends across slices. Here one
noisy synthetic volume of three classes is segmented, and a few of its
slices are shown next to the ground truth and to
:class:`~sklearn.mixture.GaussianMixture` on the same voxels.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.mixture import GaussianMixture

from skdgmm import DeepGaussianMixture, PixelwiseMixture
from skdgmm.datasets import make_segmentation_images
from skdgmm.metrics import match_labels
from skdgmm.plotting import plot_overlay

volumes, truth = make_segmentation_images(
    1, (16, 40, 40), noise=0.6, smoothness=3.0, random_state=0
)
print("volume stack:", volumes.shape)

models = {
    "GaussianMixture": PixelwiseMixture(
        GaussianMixture(3, random_state=0), spatial_dims=3
    ),
    "DeepGaussianMixture": DeepGaussianMixture(
        3, spatial_dims=3, random_state=0, device="cpu"
    ),
}
segmentations = {"ground truth": truth[0]}
for name, model in models.items():
    labels = match_labels(truth, model.fit_predict(volumes), [0, 1, 2], [0, 1, 2])
    print(f"{name}: {np.mean(labels == truth):.1%} of the voxels right")
    segmentations[name] = labels[0]

# %%
# Three slices (rows: ground truth, EM, deep model). The label maps of the
# deep model are coherent from one slice to the next, as the network
# sees the volume in 3-D.
slices = [4, 8, 12]
fig, axes = plt.subplots(3, 3, figsize=(8, 9), layout="constrained")
for row, (name, labels) in zip(axes, segmentations.items()):
    for ax, z in zip(row, slices):
        plot_overlay(volumes[0, z], labels[z], ax=ax, title=f"{name}, slice {z}")
plt.show()
