"""Inference in ONNX Runtime, where it is installed (the ``onnx`` extra).

A fitted U-Net's pass on a padded input (:meth:`UNet.core`, in either
normalisation) is exported once to ONNX, with dynamic batch and spatial
sizes, and run by an ONNX Runtime session; everything around it (padding,
tiles, the choice of normalisation) stays :meth:`UNet.infer`'s, so both
runtimes compute the same function. Sessions are cached per network in a
:class:`weakref.WeakKeyDictionary`: nothing of the estimator changes, a refit
(a new ``network_``) gets new sessions, and a collected network drops them.
Each entry keeps a copy of the weights it exported, and a network whose
weights have changed since (``load_state_dict``, a user's own fine-tuning)
is exported again.
"""

import copy
import functools
import importlib.util
import inspect
import io
import threading
import warnings
import weakref

import torch
from torch import nn

from ._networks import UNet

RUNTIMES = ("auto", "torch", "onnxruntime")

# torch 2.5 and later export with dynamo by default (needs onnxscript)
_TORCHSCRIPT_EXPORTER = (
    {"dynamo": False}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters
    else {}
)
_SESSIONS = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def onnxruntime_available():
    """Whether ONNX Runtime, and onnx for torch's exporter, can be imported."""
    return all(importlib.util.find_spec(name) for name in ("onnxruntime", "onnx"))


def inference_network(network, runtime, device, dtype):
    """What computes the ``network``'s inference logits: the network itself,
    or with ONNX Runtime (``runtime`` "onnxruntime", or "auto" where it is
    installed) its U-Net pass in an ONNX Runtime session. ONNX Runtime runs
    float32 U-Nets on the CPU; other networks, devices and dtypes use torch.

    Raises
    ------
    ImportError
        If ``runtime`` is "onnxruntime" and ONNX Runtime is not installed.
    """
    if runtime == "torch":
        return network
    if not onnxruntime_available():
        if runtime == "onnxruntime":
            raise ImportError(
                "runtime='onnxruntime' needs ONNX Runtime and onnx: pip install "
                "'skdgmm[onnx]' (or use runtime='auto' or 'torch')."
            )
        return network
    if not isinstance(network, UNet) or device.type != "cpu" or dtype != torch.float32:
        return network
    return functools.partial(network.infer, core=functools.partial(_run, network))


def _run(network, x, running):
    """:meth:`UNet.core` of ``x`` computed by ONNX Runtime."""
    session = _session(network, running)
    (logits,) = session.run(None, {"x": x.numpy()})
    return torch.from_numpy(logits)


def _session(network, running):
    """The cached session of the ``network``'s pass (``running``: normalised
    by the running statistics), exported on first use and again after the
    network's weights change."""
    state = network.state_dict()
    with _LOCK:
        exported, sessions = _SESSIONS.get(network, (None, {}))
        # comparing the values (30k for the default U-Net: about 0.2 ms)
        # sees every change, also those made through ``.data``, which a
        # tensor's version counter does not record
        if exported is None or not all(
            exported[name].device == value.device and torch.equal(exported[name], value)
            for name, value in state.items()
        ):
            exported = {name: value.clone() for name, value in state.items()}
            sessions = {}
            _SESSIONS[network] = (exported, sessions)
        if running not in sessions:
            sessions[running] = _new_session(export_core(network, running))
        return sessions[running]


class _Core(nn.Module):
    def __init__(self, network, running):
        super().__init__()
        self.network, self.running = network, running

    def forward(self, x):
        return self.network.core(x, self.running)


def export_core(network, running):
    """The ONNX model (bytes) of ``network.core(x, running)``: input ``x``
    of shape ``(N, C, *spatial)``, each spatial size a multiple of
    ``2**network.depth`` (at least twice it), output ``logits`` of shape
    ``(N, K, *spatial)``."""
    # a copy in eval mode: export switches the modes of what it exports
    core = _Core(copy.deepcopy(network).cpu().float(), running).eval()
    first = network.encoders[0][0]
    spatial_dims = first.weight.ndim - 2
    example = torch.zeros(
        (1, first.in_channels) + (2 * 2**network.depth,) * spatial_dims
    )
    axes = {0: "n", **{2 + i: f"size{i}" for i in range(spatial_dims)}}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter (torch 2.2 and later, no onnxscript
        # needed) warns that it is deprecated, and of traced Python booleans
        # that do not depend on the input
        warnings.simplefilter("ignore")
        torch.onnx.export(
            core,
            (example,),
            buffer,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": axes, "logits": axes},
            opset_version=17,
            **_TORCHSCRIPT_EXPORTER,
        )
    return buffer.getvalue()


class _Deployed(nn.Module):
    """A fitted U-Net from input units to responsibilities and labels, for
    :func:`export_model`: the network's input scaling, padding to a multiple
    of ``2**depth`` (edge values repeated) and the softmax are in the
    graph."""

    def __init__(self, network, center, channel_scale):
        super().__init__()
        self.network = network
        shape = (1, -1) + (1,) * (network.encoders[0][0].weight.ndim - 2)
        self.register_buffer("center", torch.tensor(center).float().reshape(shape))
        self.register_buffer(
            "scale", torch.tensor(channel_scale).float().reshape(shape)
        )

    def forward(self, x):
        size = x.shape[2:]
        step = 2**self.network.depth
        padding = []
        for s in reversed(size):
            # traced: a size of the graph's input, not a constant
            padding += [0, (-s) % step]
        x = nn.functional.pad((x - self.center) / self.scale, padding, mode="replicate")
        running = bool(self.network.trained_on_patches)
        logits = self.network.core(x, running)[(..., *(slice(0, s) for s in size))]
        return logits.softmax(1), logits.argmax(1)


def export_model(network, scaling, path, n_components):
    """Write the ONNX model of a fitted U-Net's inference (see
    :meth:`skdgmm.DeepGaussianMixture.to_onnx`) to ``path``."""
    # the export needs onnx only; running the file needs no Python at all
    if importlib.util.find_spec("onnx") is None:
        raise ImportError("to_onnx needs onnx: pip install 'skdgmm[onnx]'.")
    import onnx

    deployed = _Deployed(
        copy.deepcopy(network).cpu().float(), scaling.center, scaling.channel_scale
    ).eval()
    first = network.encoders[0][0]
    spatial_dims = first.weight.ndim - 2
    example = torch.zeros(
        (1, first.in_channels) + (2 * 2**network.depth,) * spatial_dims
    )
    spatial = {2 + i: f"size{i}" for i in range(spatial_dims)}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in export_core
        torch.onnx.export(
            deployed,
            (example,),
            buffer,
            input_names=["x"],
            output_names=["probabilities", "labels"],
            dynamic_axes={
                "x": {0: "n", **spatial},
                "probabilities": {0: "n", **spatial},
                "labels": {0: "n", **{k - 1: v for k, v in spatial.items()}},
            },
            opset_version=17,
            **_TORCHSCRIPT_EXPORTER,
        )
    model = onnx.load_from_string(buffer.getvalue())
    model.doc_string = (
        f"skdgmm DeepGaussianMixture: x (N, C, *spatial) float32 in the "
        f"training images' units, channels first, each spatial size at least "
        f"{2 * 2**network.depth}; probabilities (N, {n_components}, *spatial); "
        f"labels (N, *spatial) int64."
    )
    onnx.save(model, path)


def _new_session(model):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # as many threads as torch's, which sleep between calls instead of
    # spinning (that would steal the cores from the rest of the program)
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        model, options, providers=["CPUExecutionProvider"]
    )
