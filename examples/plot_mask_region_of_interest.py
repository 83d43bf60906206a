"""
Segment inside a region of interest
===================================

Medical images are often segmented inside an organ only: the paper behind
:class:`~skdgmm.DeepGaussianMixture` finds scar and edema inside the
myocardium. A boolean ``mask`` (True inside) restricts the model to those
pixels: the Gaussians are fitted on them alone, and pixels outside get label
-1 and probability 0. The network still sees a margin around the region as
context.

Here a synthetic "organ", a disk holding two tissue classes, lies among
brighter structures. Without the mask the two components split the organ
from what surrounds it; with the mask they go to the two tissues.
"""

import matplotlib.pyplot as plt
import numpy as np

from skdgmm import DeepGaussianMixture
from skdgmm.datasets import make_segmentation_images
from skdgmm.metrics import match_labels
from skdgmm.plotting import plot_overlay, plot_probabilities

tissue, truth = make_segmentation_images(
    1, (64, 64), n_classes=2, noise=0.25, random_state=0
)
rows, cols = np.mgrid[:64, :64]
mask = (rows - 32) ** 2 + (cols - 32) ** 2 < 24**2
surroundings, _ = make_segmentation_images(
    1, (64, 64), n_classes=2, noise=0.25, random_state=1
)
# outside the organ: brighter structures, at intensities 3 and 4
images = np.where(mask, tissue, surroundings + 3)
truth = np.where(mask, truth, -1)

model = DeepGaussianMixture(2, random_state=0, device="cpu")
without_mask = model.fit_predict(images)
with_mask = model.fit_predict(images, mask=mask[None])
# name the clusters after the tissue classes they overlap best
without_mask = match_labels(truth, without_mask, [0, 1], [0, 1])
with_mask = match_labels(truth, with_mask, [0, 1], [0, 1])
for name, labels in [("without mask", without_mask), ("with mask", with_mask)]:
    print(
        f"{name}: {np.mean(labels[0][mask] == truth[0][mask]):.1%} of the organ right"
    )

# %%
# The image with the region of interest outlined, then the two
# segmentations. Labels outside the mask are -1 and are not coloured.
fig, axes = plt.subplots(1, 4, figsize=(13, 3.8), layout="constrained")
axes[0].imshow(images[0], cmap="gray")
axes[0].contour(mask, levels=[0.5], colors="tab:red")
axes[0].set_title("image and region of interest")
axes[0].set_axis_off()
plot_overlay(images[0], truth[0], ax=axes[1], title="tissue classes")
plot_overlay(images[0], without_mask[0], ax=axes[2], title="K=2 without mask")
plot_overlay(images[0], with_mask[0], ax=axes[3], title="K=2 inside the mask")
plt.show()

# %%
# Probabilities of the masked model: zero outside the region, where
# :func:`~skdgmm.plotting.plot_probabilities` leaves the maps blank.
plot_probabilities(model.predict_proba(images, mask=mask[None])[0])
plt.show()
