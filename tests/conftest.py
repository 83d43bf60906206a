import numpy as np
import pytest

from skdgmm.datasets import make_segmentation_images

# small, fast settings shared by the tests
FAST = dict(max_iter=5, network_width=4, network_depth=1, device="cpu", random_state=0)


@pytest.fixture
def images():
    """Three 2-D single-channel images of three classes, and their labels."""
    return make_segmentation_images(3, (20, 17), noise=0.2, random_state=0)


@pytest.fixture
def rng():
    return np.random.RandomState(0)
