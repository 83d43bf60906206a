"""Deep Gaussian mixture models for unsupervised image segmentation."""

from .mixture import DeepGaussianMixture

__all__ = ["DeepGaussianMixture"]
__version__ = "0.1.0.dev0"
