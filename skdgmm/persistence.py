"""Saving and loading estimators without pickle.

:func:`save` writes an estimator to one file, a zip archive of plain data:
its class and parameters as JSON, its fitted arrays as a NumPy ``.npz``
file (read back with ``allow_pickle=False``) and the weights of its network
as a ``torch.save`` of its ``state_dict`` (read back with
``torch.load(..., weights_only=True)``). :func:`load` rebuilds the estimator
from them: it imports nothing but the modules of scikit-learn and skdgmm,
creates nothing but their estimators (and skdgmm's own data classes) and
runs no code from the file, unlike :mod:`pickle`, so a model from an
untrusted source cannot run code when it is loaded.
"""

import dataclasses
import importlib
import io
import json
import pickle
import zipfile
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator

from ._networks import PixelNet, UNet, build_network

_FORMAT = "skdgmm-estimator"
_VERSION = 1
# The packages whose classes load may create.
_TRUSTED_PACKAGES = {"sklearn", "skdgmm"}
# State that is configuration of scikit-learn's metadata routing, not of
# the model: not saved.
_SKIPPED_STATE = {"_metadata_request"}


def save(estimator, path):
    """Save an estimator to ``path`` without pickle.

    The estimators of skdgmm, fitted or not, and scikit-learn's whose
    parameters and fitted state are numbers, strings, arrays and other
    estimators (``GaussianMixture``, ``KMeans``, ``Pipeline``...): a
    :class:`PixelwiseMixture` wrapping one, or a Pipeline of them. Load it
    with :func:`load`, which runs no code from the file.

    Parameters
    ----------
    estimator : estimator object
        The model to save.

    path : str or path-like
        The file to write (a zip archive; any suffix, e.g. ``.skdgmm``).

    Raises
    ------
    TypeError
        If a parameter or fitted attribute is of a type that cannot be
        saved without pickle (a function, say); pickle or skops can.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import skdgmm
    >>> from skdgmm.datasets import make_segmentation_images
    >>> images, _ = make_segmentation_images(1, (16, 16), random_state=0)
    >>> model = skdgmm.DeepGaussianMixture(2, max_iter=5, random_state=0,
    ...                                    device="cpu").fit(images)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.skdgmm"
    >>> skdgmm.save(model, path)
    >>> loaded = skdgmm.load(path)
    >>> bool((loaded.predict(images) == model.predict(images)).all())
    True
    """
    if not isinstance(estimator, BaseEstimator):
        raise TypeError(
            f"skdgmm.save saves estimators; got a {type(estimator).__name__}."
        )
    writer = _Writer()
    tree = writer.encode(estimator, "estimator")
    header = {
        "format": _FORMAT,
        "version": _VERSION,
        "skdgmm_version": importlib.import_module("skdgmm").__version__,
        "estimator": tree,
    }
    arrays = io.BytesIO()
    np.savez(arrays, **writer.arrays)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("estimator.json", json.dumps(header, indent=1))
        archive.writestr("arrays.npz", arrays.getvalue())
        for key, state in writer.networks.items():
            buffer = io.BytesIO()
            torch.save(state, buffer)
            archive.writestr(f"networks/{key}.pt", buffer.getvalue())


def load(path):
    """Load an estimator saved by :func:`save`.

    Nothing in the file is executed: the arrays are read with
    ``allow_pickle=False``, the network weights with ``weights_only=True``,
    and only estimators of scikit-learn and skdgmm are created.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.

    Returns
    -------
    estimator : estimator object
        The estimator as it was saved, its network on the CPU.

    Raises
    ------
    ValueError
        If ``path`` is not such a file, or names a class that load does not
        create.
    """
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} is not a file written by skdgmm.save.") from error
    with archive:
        names = set(archive.namelist())
        if not {"estimator.json", "arrays.npz"} <= names:
            raise ValueError(f"{path} is not a file written by skdgmm.save.")
        header = json.loads(archive.read("estimator.json"))
        if header.get("format") != _FORMAT or header.get("version") != _VERSION:
            raise ValueError(
                f"{path} is not a file of version {_VERSION} of skdgmm.save "
                f"(format {header.get('format')!r}, version "
                f"{header.get('version')!r})."
            )
        with np.load(io.BytesIO(archive.read("arrays.npz")), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}

        def network_state(key):
            name = f"networks/{key}.pt"
            if name not in names:
                raise ValueError(f"{path} lacks the network weights {name}.")
            try:
                return torch.load(
                    io.BytesIO(archive.read(name)),
                    map_location="cpu",
                    weights_only=True,
                )
            except pickle.UnpicklingError as error:
                raise ValueError(
                    f"{path}: {name} holds more than tensors; skdgmm.load "
                    f"refuses it ({error})."
                ) from error

        return _Reader(arrays, network_state).decode(header["estimator"])


def _qualified_name(cls):
    return f"{cls.__module__}:{cls.__qualname__}"


def _trusted_class(name):
    """The class ``module:qualname`` if it is in a trusted package, else a
    ValueError (nothing outside those packages is imported)."""
    module, _, qualname = name.partition(":")
    if module.split(".")[0] not in _TRUSTED_PACKAGES or not qualname:
        raise ValueError(
            f"The file names the class {name!r}; skdgmm.load creates only "
            f"estimators of scikit-learn and skdgmm."
        )
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise ValueError(f"{name!r} is not a class.")
    return obj


class _Writer:
    """Encodes values as JSON, with arrays and network weights on the side."""

    def __init__(self):
        self.arrays = {}
        self.networks = {}

    def _array(self, array):
        key = f"a{len(self.arrays)}"
        self.arrays[key] = array
        return key

    def encode(self, value, where):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (np.generic, np.ndarray)):
            array = np.asarray(value)
            if array.dtype.kind in "biufc":
                tag = "__scalar__" if isinstance(value, np.generic) else "__array__"
                return {tag: self._array(array)}
            if array.dtype.kind in "OU" and all(isinstance(v, str) for v in array.flat):
                return {"__strings__": array.tolist(), "dtype": array.dtype.kind}
            raise TypeError(
                f"skdgmm.save cannot store {where}, an array of dtype {array.dtype}."
            )
        if isinstance(value, Integral):
            return int(value)
        if isinstance(value, Real):
            return float(value)
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {
                "__tuple__": [
                    self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)
                ]
            }
        if isinstance(value, dict):
            return {
                "__dict__": [
                    [self.encode(k, where), self.encode(v, f"{where}[{k!r}]")]
                    for k, v in value.items()
                ]
            }
        if isinstance(value, torch.device):
            return {"__device__": str(value)}
        if isinstance(value, torch.Tensor):
            return {
                "__tensor__": self._array(value.detach().cpu().numpy()),
                "requires_grad": value.requires_grad,
            }
        if isinstance(value, torch.dtype):
            return {"__torch_dtype__": str(value).removeprefix("torch.")}
        if isinstance(value, np.dtype) or (
            isinstance(value, type) and issubclass(value, np.generic)
        ):
            return {"__dtype__": np.dtype(value).str, "type": isinstance(value, type)}
        if isinstance(value, np.random.RandomState):
            return {"__random_state__": self.encode(value.get_state(), where)}
        if isinstance(value, (UNet, PixelNet)):
            key = str(len(self.networks))
            self.networks[key] = {
                name: tensor.detach().cpu().clone()
                for name, tensor in value.state_dict().items()
            }
            return {"__network__": key, **_network_spec(value)}
        if isinstance(value, BaseEstimator):
            return self._estimator(value, where)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            if type(value).__module__.split(".")[0] == "skdgmm":
                return {
                    "__dataclass__": _qualified_name(type(value)),
                    "fields": {
                        f.name: self.encode(getattr(value, f.name), f"{where}.{f.name}")
                        for f in dataclasses.fields(value)
                    },
                }
        raise TypeError(
            f"skdgmm.save cannot store {where}, of type "
            f"{type(value).__module__}.{type(value).__qualname__}, without "
            f"pickle; save this model with pickle, joblib or skops instead."
        )

    def _estimator(self, estimator, where):
        cls = type(estimator)
        if cls.__module__.split(".")[0] not in _TRUSTED_PACKAGES:
            raise TypeError(
                f"skdgmm.save stores estimators of scikit-learn and skdgmm; "
                f"{where} is a {_qualified_name(cls)}. Save it with pickle, "
                f"joblib or skops instead."
            )
        params = estimator.get_params(deep=False)
        state = {
            name: value
            for name, value in vars(estimator).items()
            if name not in params and name not in _SKIPPED_STATE
        }
        name = type(estimator).__name__
        return {
            "__estimator__": _qualified_name(cls),
            "params": {k: self.encode(v, f"{name}.{k}") for k, v in params.items()},
            "state": {k: self.encode(v, f"{name}.{k}") for k, v in state.items()},
        }


def _network_spec(network):
    """What :func:`~skdgmm._networks.build_network` needs to rebuild it."""
    if isinstance(network, UNet):
        first = network.encoders[0][0]
        kind, depth, out = "unet", network.depth, network.head
    else:
        first = network.layers[0]
        kind, depth, out = "pixel", 0, network.layers[-1]
    return dict(
        kind=kind,
        in_channels=first.in_channels,
        n_components=out.out_channels,
        width=first.out_channels,
        depth=depth,
        spatial_dims=len(first.kernel_size),
        dtype=str(first.weight.dtype).removeprefix("torch."),
        training=network.training,
    )


class _Reader:
    """Decodes what :class:`_Writer` encoded."""

    def __init__(self, arrays, network_state):
        self.arrays = arrays
        self.network_state = network_state

    def _array(self, key):
        if key not in self.arrays:
            raise ValueError(f"The file lacks the array {key!r}.")
        return self.arrays[key]

    def decode(self, node):
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "__array__" in node:
            return self._array(node["__array__"]).copy()
        if "__scalar__" in node:
            return self._array(node["__scalar__"])[()]
        if "__strings__" in node:
            kind = node.get("dtype")
            return np.asarray(node["__strings__"], dtype=object if kind == "O" else str)
        if "__tuple__" in node:
            return tuple(self.decode(v) for v in node["__tuple__"])
        if "__dict__" in node:
            return {self._key(k): self.decode(v) for k, v in node["__dict__"]}
        if "__device__" in node:
            return torch.device(node["__device__"])
        if "__tensor__" in node:
            tensor = torch.from_numpy(self._array(node["__tensor__"]).copy())
            return tensor.requires_grad_(bool(node.get("requires_grad", False)))
        if "__torch_dtype__" in node:
            dtype = getattr(torch, node["__torch_dtype__"], None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"Unknown torch dtype {node['__torch_dtype__']!r}.")
            return dtype
        if "__dtype__" in node:
            dtype = np.dtype(node["__dtype__"])
            return dtype.type if node.get("type") else dtype
        if "__random_state__" in node:
            random_state = np.random.RandomState()
            random_state.set_state(self.decode(node["__random_state__"]))
            return random_state
        if "__network__" in node:
            return self._network(node)
        if "__estimator__" in node:
            return self._estimator(node)
        if "__dataclass__" in node:
            cls = _trusted_class(node["__dataclass__"])
            if cls.__module__.split(".")[0] != "skdgmm" or not dataclasses.is_dataclass(
                cls
            ):
                raise ValueError(
                    f"{node['__dataclass__']!r} is not a data class of skdgmm."
                )
            return cls(**{k: self.decode(v) for k, v in node["fields"].items()})
        raise ValueError(f"Unknown entry in the file: {sorted(node)}.")

    def _key(self, key):
        key = self.decode(key)
        return tuple(key) if isinstance(key, list) else key

    def _estimator(self, node):
        cls = _trusted_class(node["__estimator__"])
        if not issubclass(cls, BaseEstimator):
            raise ValueError(f"{node['__estimator__']!r} is not an estimator.")
        estimator = cls(**{k: self.decode(v) for k, v in node["params"].items()})
        vars(estimator).update({k: self.decode(v) for k, v in node["state"].items()})
        return estimator

    def _network(self, node):
        if node.get("kind") not in ("unet", "pixel"):
            raise ValueError(f"Unknown network kind {node.get('kind')!r}.")
        network = build_network(
            int(node["in_channels"]),
            int(node["n_components"]),
            kind=node["kind"],
            width=int(node["width"]),
            depth=int(node["depth"]),
            spatial_dims=int(node["spatial_dims"]),
            generator=torch.Generator(),
        )
        dtype = getattr(torch, str(node.get("dtype", "float32")), None)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Unknown network dtype {node.get('dtype')!r}.")
        network = network.to(dtype=dtype)
        network.load_state_dict(self.network_state(node["__network__"]))
        return network.train(bool(node["training"]))
