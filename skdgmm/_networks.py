"""Networks mapping pixels to mixture responsibilities (as logits).

* :class:`PixelNet` looks at each pixel alone (1x1 convolutions). It is the
  network for tabular data, where samples are independent.
* :class:`UNet` is a 2-D or 3-D U-Net with InstanceNorm and LeakyReLU, as in
  the paper; it gives the responsibilities their spatial coherence.

Weights are drawn from a local :class:`torch.Generator`, never from the global
random number generator.
"""

import contextlib
import contextvars
import functools
import itertools
import math

import torch
from torch import nn
from torch.nn import functional as F

from ._layout import TILE_PIXELS, patch_edge, tile_windows

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


# Whether InstanceNorm uses its running statistics: a context variable, not
# an attribute of the modules, so that threads predicting with one network
# (each in its own context) never change each other's normalisation.
_USE_RUNNING_STATS = contextvars.ContextVar("use_running_stats", default=False)


class _TileableInstanceNorm:
    """InstanceNorm that also records running statistics in training, and
    uses them instead of the input's inside :meth:`UNet.running_statistics`:
    a tile of a large image must be normalised as the whole image would be,
    not by its own statistics, and a network trained on patches must see
    features normalised as a patch's were."""

    def forward(self, x):
        if self.training:
            # normalises by the input's statistics and updates the running ones
            return F.instance_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                use_input_stats=True,
                momentum=self.momentum,
                eps=self.eps,
            )
        if _USE_RUNNING_STATS.get():
            # what instance_norm does with use_input_stats=False, without its
            # copies of the statistics per image (and exportable to ONNX)
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                training=False,
                eps=self.eps,
            )
        if torch.onnx.is_in_onnx_export():
            # ONNX's InstanceNormalization; group_norm's export is slower
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        # the same normalisation (one group per channel), 4-6 times faster
        # than instance_norm on the CPU
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


class _InstanceNorm2d(_TileableInstanceNorm, nn.InstanceNorm2d):
    pass


class _InstanceNorm3d(_TileableInstanceNorm, nn.InstanceNorm3d):
    pass


_INSTANCE_NORM = {2: _InstanceNorm2d, 3: _InstanceNorm3d}
_MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}


class PixelNet(nn.Module):
    """Per-pixel network: a multilayer perceptron made of 1x1 convolutions."""

    def __init__(self, in_channels, out_channels, width, spatial_dims):
        super().__init__()
        conv = _CONV[spatial_dims]
        self.layers = nn.Sequential(
            conv(in_channels, width, 1),
            nn.LeakyReLU(),
            conv(width, width, 1),
            nn.LeakyReLU(),
            conv(width, out_channels, 1),
        )

    def forward(self, x):
        return self.layers(x)


def _conv_block(in_channels, out_channels, spatial_dims):
    conv, norm = _CONV[spatial_dims], _INSTANCE_NORM[spatial_dims]
    return nn.Sequential(
        conv(in_channels, out_channels, 3, padding=1),
        norm(out_channels, affine=True, track_running_stats=True),
        nn.LeakyReLU(),
        conv(out_channels, out_channels, 3, padding=1),
        norm(out_channels, affine=True, track_running_stats=True),
        nn.LeakyReLU(),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` down-sampling steps; any input size is accepted.

    Inputs are padded (edge values repeated) to a multiple of ``2**depth`` and
    the output is cropped back, so odd sizes work.

    At inference, each input is normalised by its own statistics, unless it
    is too large to go through at once (it then goes in tiles) or the
    network was trained on patches (``trained_on_patches``): both use the
    running statistics of training, so that the network sees features
    normalised as in training.
    """

    def __init__(self, in_channels, out_channels, width, depth, spatial_dims):
        super().__init__()
        self.depth = depth
        widths = [width * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList(
            _conv_block(c_in, c_out, spatial_dims)
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths)
        )
        self.pool = _MAX_POOL[spatial_dims](2)
        self.upsamplers = nn.ModuleList(
            _CONV_TRANSPOSE[spatial_dims](c, c // 2, 2, stride=2)
            for c in reversed(widths[1:])
        )
        self.decoders = nn.ModuleList(
            _conv_block(c, c // 2, spatial_dims) for c in reversed(widths[1:])
        )
        self.head = _CONV[spatial_dims](width, out_channels, 1)
        # a buffer, so that it travels with the weights
        self.register_buffer("trained_on_patches", torch.tensor(False))

    def forward(self, x):
        if self.training:
            return self._padded(x, self._core)
        return self.infer(x, self.core)

    def infer(self, x, core):
        """The logits of ``x`` at inference, computed by
        ``core(padded, running)``: the network's pass on an input padded to
        a multiple of ``2**depth`` pixels per axis, normalised by the
        running statistics if ``running`` (:meth:`core`, or the same pass in
        another runtime). Large inputs go in tiles."""
        large = math.prod(x.shape[2:]) > TILE_PIXELS
        running = large or bool(self.trained_on_patches)
        piece = functools.partial(
            self._padded, core=functools.partial(core, running=running)
        )
        return self._blend_tiles(x, piece) if large else piece(x)

    def core(self, x, running):
        """The pass on a padded input ``x``, normalised by the running
        statistics of training if ``running``, else as the caller's context
        says (:meth:`running_statistics`; by default, the input's)."""
        with self.running_statistics() if running else contextlib.nullcontext():
            return self._core(x)

    def _padded(self, x, core):
        """``core`` of ``x`` padded (edge values repeated) to a multiple of
        ``2**depth``, cropped back to the size of ``x``."""
        size = x.shape[2:]
        x = F.pad(x, _padding(size, self.depth), mode="replicate")
        return core(x)[(..., *(slice(0, s) for s in size))]

    def _core(self, x):
        if x.ndim == 4:
            # the weights' layout (see build_network)
            x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        for upsample, decoder, skip in zip(
            self.upsamplers, self.decoders, reversed(skips[:-1])
        ):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)

    @staticmethod
    @contextlib.contextmanager
    def running_statistics():
        """Normalise by the running statistics of training, not the input's
        (in this thread only)."""
        token = _USE_RUNNING_STATS.set(True)
        try:
            yield
        finally:
            _USE_RUNNING_STATS.reset(token)

    def _blend_tiles(self, x, piece):
        """The logits of a large input, computed by ``piece`` in overlapping
        tiles.

        Memory then stays that of one tile. Each tile's logits are weighted
        by a ramp that falls off over the overlap towards the tile's edges,
        so that neighbouring tiles blend without seams.
        """
        edge = patch_edge(TILE_PIXELS, x.ndim - 2)
        # wider than the receptive field where tiles are large enough
        overlap = min(16 * 2**self.depth, edge // 4)
        axes = [tile_windows(size, edge, overlap) for size in x.shape[2:]]
        logits = x.new_zeros((len(x), self.head.out_channels, *x.shape[2:]))
        weights = x.new_zeros(x.shape[2:])
        for window in itertools.product(*axes):
            ramp = math.prod(
                _ramp(w.stop - w.start, overlap, x).reshape(
                    (-1,) + (1,) * (len(window) - 1 - axis)
                )
                for axis, w in enumerate(window)
            )
            logits[(..., *window)] += piece(x[(..., *window)]) * ramp
            weights[window] += ramp
        return logits / weights


def _ramp(length, overlap, like):
    """Blending weights along one axis of a tile: 1 inside, falling
    linearly to ``1 / overlap`` at both ends."""
    position = torch.arange(length, device=like.device, dtype=like.dtype)
    distance = torch.minimum(position, length - 1 - position)
    return ((distance + 1) / overlap).clamp(max=1.0)


def _padding(size, depth):
    """Padding (last axis first, as F.pad wants) up to a multiple of 2**depth.

    The coarsest level keeps at least two pixels per axis, the least that
    InstanceNorm can normalise.
    """
    step = 2**depth
    pad = []
    for s in reversed(size):
        target = max(math.ceil(s / step) * step, 2 * step)
        pad += [0, target - s]
    return pad


def unet_depth(spatial_shape, max_depth):
    """Deepest U-Net whose coarsest level still has >= 4 pixels per axis."""
    smallest = min(spatial_shape)
    return max(0, min(max_depth, int(math.log2(max(smallest, 1))) - 2))


def build_network(
    in_channels, n_components, *, kind, width, depth, spatial_dims, generator
):
    """Build a network and draw its weights from ``generator``.

    Parameters
    ----------
    in_channels, n_components : int
        Input channels and output logits per pixel.
    kind : {"pixel", "unet"}
    width : int
        Channels of the first level (doubled at each level of a U-Net).
    depth : int
        Down-sampling steps of a U-Net (ignored for ``"pixel"``).
    spatial_dims : {1, 2, 3}
        Spatial axes of the input (1 for tabular data laid out as a line).
    generator : torch.Generator
        The only source of randomness.
    """
    # the meta device skips PyTorch's default initialisation, which would
    # draw from (and advance) the global random number generator
    with torch.device("meta"):
        if kind == "pixel":
            net = PixelNet(in_channels, n_components, width, spatial_dims)
        else:
            net = UNet(in_channels, n_components, width, depth, spatial_dims)
    net = net.to_empty(device="cpu")
    for module in net.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        elif isinstance(module, nn.modules.instancenorm._InstanceNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            module.reset_running_stats()
        elif isinstance(module, UNet):
            module.trained_on_patches.fill_(False)
    if kind == "unet" and spatial_dims == 2:
        # oneDNN's 2-D convolutions run 1.3-2 times faster on channels-last
        # tensors (3-D ones gain nothing); converted after the weights are
        # drawn, so that the draws do not depend on the memory layout
        net = net.to(memory_format=torch.channels_last)
    return net
