"""The labelled data sets of the evaluation protocol (``../shared/data``).

Each loader returns a :class:`Benchmark` laid out as skdgmm expects:
images ``(n, H, W[, C])``, masks ``(n, H, W)``, ground-truth labels, the
classes the clusters are matched to and those that are scored. The data is
read where it lies and never copied into the project.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class Benchmark:
    name: str
    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    classes: list  # ground-truth classes inside the mask, one per cluster
    scored: list  # classes whose Dice is reported
    groups: np.ndarray  # patient of each slice (for patient-wise splits)

    @property
    def n_components(self):
        return len(self.classes)

    def subset(self, index):
        return Benchmark(
            self.name,
            self.images[index],
            self.masks[index],
            self.labels[index],
            self.classes,
            self.scored,
            self.groups[index],
        )


def available():
    return DATA.is_dir()


def load_myops():
    """MyoPS 2020 (C0, LGE, T2), K=3 inside the myocardium.

    Each channel is scaled to its 0.5-99.5 percentiles inside the
    myocardium, then clipped to [-0.5, 1.5].
    """
    data = np.load(DATA / "myops2020" / "myops2020_dev_crop192.npz")
    labels = data["labels"]
    masks = np.isin(labels, [3, 4, 5])
    images = np.moveaxis(data["images"].astype(np.float64), 1, -1)
    for image, mask in zip(images, masks):
        low, high = np.percentile(image[mask], [0.5, 99.5], axis=0)
        image[:] = np.clip((image - low) / (high - low), -0.5, 1.5)
    return Benchmark(
        "MyoPS", images, masks, labels, [3, 4, 5], [3, 4, 5], data["case_id"]
    )


def load_emidec():
    """EMIDEC LGE, K=2 inside the myocardium, slices with infarct.

    Microvascular obstruction (4) is dark like healthy muscle, so it counts
    with it (2); the infarct (3) is scored.
    """
    data = np.load(DATA / "emidec" / "emidec_lge256_subset.npz")
    labels = np.where(data["labels"] == 4, 2, data["labels"])
    keep = (labels == 3).any(axis=(1, 2))
    return Benchmark(
        "EMIDEC",
        data["images"][keep] / 255.0,
        np.isin(data["labels"][keep], [2, 3, 4]),
        labels[keep],
        [2, 3],
        [3],
        data["case_id"][keep],
    )


def load_mni152():
    """MNI152 T1 template slices, K=3 (CSF, GM, WM) inside the brain."""
    data = np.load(DATA / "mni152_nilearn" / "mni152_axial_slices.npz")
    return Benchmark(
        "MNI152",
        data["t1"] / 255.0,
        data["brain_mask"] > 0,
        data["labels"],
        [1, 2, 3],
        [1, 2, 3],
        np.arange(len(data["t1"])),
    )


def load_mni152_large():
    """The MNI152 slices upsampled 2x (nearest neighbour): images larger than
    ``patch_pixels``, which DeepGaussianMixture trains on patches."""
    benchmark = load_mni152()
    for name in ("images", "masks", "labels"):
        array = getattr(benchmark, name)
        setattr(benchmark, name, array.repeat(2, axis=1).repeat(2, axis=2))
    benchmark.name = "MNI152 at 2x"
    return benchmark


def load_nuclei():
    """DSB 2018 nuclei, grey, K=2 on the whole image; nuclei are scored."""
    from skimage.color import rgb2gray

    data = np.load(DATA / "dsb2018_nuclei" / "dsb2018_nuclei256_subset.npz")
    images = np.stack([rgb2gray(image) for image in data["images"]])
    return Benchmark(
        "DSB nuclei",
        images,
        np.ones(images.shape, bool),
        data["labels"].astype(int),
        [0, 1],
        [1],
        np.arange(len(images)),
    )


LOADERS = {
    "myops": load_myops,
    "emidec": load_emidec,
    "mni152": load_mni152,
    "mni152-2x": load_mni152_large,
    "nuclei": load_nuclei,
}
