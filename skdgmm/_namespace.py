"""Scikit-learn's ``array_api_dispatch`` at the estimator's edges.

The estimator computes with NumPy arrays and its own torch tensors. With
``sklearn.set_config(array_api_dispatch=True)``, as GaussianMixture, it
returns what it computed for an array of another namespace (a torch tensor,
an array-API array) in that namespace and on that device: the fitted
Gaussians of ``fit`` and the arrays of ``predict``, ``predict_proba``,
``score_samples`` and ``sample``; scores stay Python floats.
"""

import functools

import numpy as np
import torch
from sklearn import get_config


def dispatching():
    """Whether scikit-learn's ``array_api_dispatch`` is on."""
    return get_config()["array_api_dispatch"]


def namespace_of(array):
    """A function that puts a NumPy array in the namespace and on the device
    of ``array``, or None where that is NumPy's (or dispatch is off)."""
    if not dispatching() or isinstance(array, np.ndarray):
        return None
    if isinstance(array, torch.Tensor):
        return functools.partial(torch.as_tensor, device=array.device)
    if hasattr(array, "__array_namespace__"):
        return functools.partial(
            array.__array_namespace__().asarray, device=array.device
        )
    return None


def like(array, result):
    """``result`` (NumPy) in the namespace and on the device of ``array``."""
    convert = namespace_of(array)
    return result if convert is None else convert(result)


def to_numpy(array):
    """A fitted attribute as a NumPy array, whatever namespace or device it
    was put in."""
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)
