"""What the image mixtures share: parameter constraints and devices."""

import warnings
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions

# The axis of image stacks that holds the channels (see skdgmm._layout).
CHANNEL_AXIS_CONSTRAINT = [StrOptions({"auto"}), None, Integral]

# The parameters of sklearn.mixture.GaussianMixture that the image mixtures
# take with the same meaning, and the layout of image stacks.
MIXTURE_CONSTRAINTS = {
    "n_components": [Interval(Integral, 1, None, closed="left")],
    "covariance_type": [StrOptions({"full", "tied", "diag", "spherical"})],
    "tol": [Interval(Real, 0.0, None, closed="left")],
    "reg_covar": [Interval(Real, 0.0, None, closed="left")],
    "max_iter": [Interval(Integral, 0, None, closed="left")],
    "random_state": ["random_state"],
    "spatial_dims": [Interval(Integral, 2, 3, closed="both")],
    "channel_axis": CHANNEL_AXIS_CONSTRAINT,
}


def resolve_device(device):
    """``"auto"`` -> cuda, then mps, then cpu; anything else as torch reads it.

    Raises
    ------
    ValueError
        If ``device`` is not a device name or is not available here.
    """
    if device != "auto":
        try:
            device = torch.device(device)
        except RuntimeError as error:
            raise ValueError(
                f"device must be 'auto' or a torch device such as 'cpu', 'cuda', "
                f"'cuda:1' or 'mps'; got {device!r}."
            ) from error
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as error:
            raise ValueError(
                f"Device {str(device)!r} is not available here."
            ) from error
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def inference_device(device):
    """The device for inference: ``device`` resolved, or the CPU if it is
    missing here (a model trained on a GPU used on a machine without)."""
    try:
        return resolve_device(device)
    except ValueError:
        warnings.warn(
            f"Device {device!r} is not available here; using the CPU.", UserWarning
        )
        return torch.device("cpu")
