import numpy as np
import pytest
import torch

import skdgmm._fitting
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


def interrupt_step(monkeypatch, at):
    """Make the ``at``-th optimizer step raise KeyboardInterrupt (Ctrl-C)."""
    step, calls = torch.optim.AdamW.step, []

    def interrupting_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", interrupting_step)


def record_optimize(monkeypatch):
    """The keyword arguments of every call of optimize in a fit, in order
    (pre-training first)."""
    calls, optimize = [], skdgmm._fitting.optimize

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return optimize(*args, **kwargs)

    monkeypatch.setattr(skdgmm._fitting, "optimize", recording)
    return calls
