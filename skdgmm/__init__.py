"""Deep Gaussian mixture models for unsupervised image segmentation."""

from .features import SpatialFeatures
from .mixture import DeepGaussianMixture
from .persistence import load, save
from .pixelwise import PixelwiseMixture

__all__ = ["DeepGaussianMixture", "PixelwiseMixture", "SpatialFeatures", "load", "save"]
__version__ = "0.1.0.dev0"
