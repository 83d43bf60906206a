"""Large images, volumes and collections: patches, tiles, memory maps, dask."""

import functools

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal

from skdgmm import DeepGaussianMixture, _data, _losses, _networks
from skdgmm._layout import layout_for, masked_pixels, sample_pixels
from skdgmm.datasets import make_segmentation_images

from .conftest import FAST


@pytest.fixture
def small_tiles(monkeypatch):
    """Inference in tiles of 48 x 48 pixels (12 of overlap)."""
    for module in (_data, _networks):
        monkeypatch.setattr(module, "TILE_PIXELS", 48 * 48)


def _logits(model, X, use_running_stats):
    x = torch.tensor(
        (X[:, None] - model._scaling.center[0]) / model._scaling.channel_scale[0],
        dtype=torch.float32,
    )
    network = model.network_
    with torch.no_grad():
        return network._padded(
            x, functools.partial(network.core, running=use_running_stats)
        )


def test_tiled_inference_has_no_seams(small_tiles):
    X, _ = make_segmentation_images(1, (80, 72), noise=0.3, random_state=0)
    model = DeepGaussianMixture(3, **FAST).fit(X)
    with torch.no_grad():
        tiled = model.network_(
            torch.tensor(
                (X[:, None] - model._scaling.center[0])
                / model._scaling.channel_scale[0],
                dtype=torch.float32,
            )
        )
    whole = _logits(model, X, use_running_stats=True)
    # tiles are normalised with the statistics of training, as the whole
    # image would be, and blended over their overlap: the same labels but for
    # a few near-ties (a seam would be a line: 80 of the 5760 pixels)
    agreement = (tiled.argmax(1) == whole.argmax(1)).float().mean()
    assert agreement > 0.997
    labels = model.predict(X)
    assert labels.shape == X.shape
    assert_array_equal(labels, tiled.argmax(1).numpy())


def test_inference_leaves_the_network_unchanged(images):
    X, _ = images
    model = DeepGaussianMixture(3, **FAST).fit(X)
    before = {k: v.clone() for k, v in model.network_.state_dict().items()}
    model.predict(X)
    model.predict_proba(X[:1])
    for key, value in model.network_.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_large_images_are_trained_on_patches():
    X, y = make_segmentation_images(2, (48, 40), noise=0.2, random_state=0)
    model = DeepGaussianMixture(3, patch_pixels=16 * 16, **FAST)
    labels = model.fit_predict(X)
    assert labels.shape == y.shape
    again = DeepGaussianMixture(3, patch_pixels=16 * 16, **FAST).fit_predict(X)
    assert_array_equal(labels, again)
    # patches change what training sees
    whole = DeepGaussianMixture(3, patch_pixels=None, **FAST).fit(X)
    assert not np.allclose(whole.loss_curve_, model.loss_curve_)
    assert model.network_.trained_on_patches
    assert not whole.network_.trained_on_patches
    # continuing on whole images keeps what the network was trained on
    warm = DeepGaussianMixture(
        3, patch_pixels=16 * 16, warm_start=True, **{**FAST, "max_iter": 0}
    )
    warm.fit(X)
    warm.set_params(patch_pixels=None).fit(X)
    assert warm.network_.trained_on_patches


def test_new_networks_are_not_marked_as_trained_on_patches():
    network = _networks.build_network(
        1,
        3,
        kind="unet",
        width=4,
        depth=1,
        spatial_dims=2,
        generator=torch.Generator().manual_seed(0),
    )
    assert not network.trained_on_patches


def test_a_network_trained_on_patches_labels_a_region_alike_in_any_surroundings():
    """Trained on patches, the network normalises with its training
    statistics, not the image's: a region gets the same labels whether it
    comes alone or inside a larger image with other contents (away from the
    seam), as during training, where each patch was a part of an image."""
    X, _ = make_segmentation_images(1, (40, 40), noise=0.2, random_state=0)
    model = DeepGaussianMixture(3, patch_pixels=16 * 16, **FAST).fit(X)
    alone = model.predict(X)
    larger = np.concatenate([X, np.full_like(X, X.max())], axis=2)
    inside = model.predict(larger)[:, :, :40]
    assert_array_equal(inside[:, :, :24], alone[:, :, :24])


@pytest.mark.parametrize("masked", [False, True])
def test_sample_pixels_reads_a_subset_of_the_masked_pixels(rng, masked):
    X = rng.rand(3, 10, 9, 2)
    mask = rng.rand(3, 10, 9) > 0.5 if masked else None
    layout = layout_for(X.ndim, 2)
    every = masked_pixels(X, mask, layout)
    assert_array_equal(sample_pixels(X, mask, layout, 10_000, rng), every)
    subset = sample_pixels(X, mask, layout, 20, rng)
    assert subset.shape == (20, 2)
    assert {tuple(p) for p in subset} <= {tuple(p) for p in every}


def test_fit_on_a_memory_mapped_stack(tmp_path):
    X, _ = make_segmentation_images(6, (24, 20), noise=0.2, random_state=0)
    stack = np.lib.format.open_memmap(
        tmp_path / "stack.npy", mode="w+", dtype=np.float32, shape=X.shape
    )
    stack[:] = X
    stack.flush()
    stack = np.load(tmp_path / "stack.npy", mmap_mode="r")
    params = dict(FAST, batch_size=2)
    from_disk = DeepGaussianMixture(3, **params).fit(stack)
    in_memory = DeepGaussianMixture(3, **params).fit(np.array(stack))
    assert_array_equal(from_disk.predict(stack), in_memory.predict(X))


def test_3d_volume():
    X, y = make_segmentation_images(1, (12, 16, 16), noise=0.2, random_state=0)
    model = DeepGaussianMixture(3, spatial_dims=3, patch_pixels=8**3, **FAST)
    labels = model.fit_predict(X)
    assert labels.shape == y.shape
    assert np.isfinite(model.score(X))


def test_predict_block_wise_on_a_dask_array():
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    X, _ = make_segmentation_images(4, (16, 16), noise=0.2, random_state=0)
    model = DeepGaussianMixture(3, **FAST).fit(X)
    lazy = da.from_array(X, chunks=(1, -1, -1))
    with distributed.Client(processes=False, n_workers=1, dashboard_address=None):
        labels = lazy.map_blocks(model.predict, dtype=int).compute()
    assert_array_equal(labels, model.predict(X))


def test_patches_are_trained_on_the_initial_gaussians(monkeypatch):
    """The M-step of a patch would estimate the patch's Gaussians, not the
    image's: patches use the initial EM fit, whole images the M-step."""
    seen = set()
    energy = _losses.mixture_energy

    def spy(logits, batch, **kwargs):
        seen.add((batch.is_patch, kwargs["gaussians"]))
        return energy(logits, batch, **kwargs)

    monkeypatch.setattr(_losses, "mixture_energy", spy)
    X, _ = make_segmentation_images(2, (40, 40), noise=0.2, random_state=0)
    DeepGaussianMixture(3, patch_pixels=16 * 16, **FAST).fit(X)
    assert seen == {(True, "fixed")}
    seen.clear()
    DeepGaussianMixture(3, **FAST).fit(X)
    assert seen == {(False, "bounded")}


@pytest.mark.parametrize("shape", [(2, 8, 40, 24), (2, 8, 12, 10, 6)])
def test_inference_normalisation_is_instance_norm(shape):
    """At inference the network normalises each image by its own statistics
    with group_norm (one group per channel), which is instance_norm; in
    training and with running statistics it is instance_norm itself."""
    norm = _networks._INSTANCE_NORM[len(shape) - 2](
        8, affine=True, track_running_stats=True
    )
    with torch.no_grad():
        norm.weight.normal_(generator=torch.Generator().manual_seed(0))
        norm.bias.normal_(generator=torch.Generator().manual_seed(1))
    x = 3 * torch.randn(shape, generator=torch.Generator().manual_seed(2)) + 1
    norm.train()
    trained = norm(x)
    running = norm.running_mean.clone(), norm.running_var.clone()
    torch.testing.assert_close(
        trained,
        torch.nn.functional.instance_norm(x, weight=norm.weight, bias=norm.bias),
    )
    norm.eval()
    torch.testing.assert_close(norm(x), trained)
    with _networks.UNet.running_statistics():
        torch.testing.assert_close(
            norm(x),
            torch.nn.functional.instance_norm(
                x, *running, norm.weight, norm.bias, use_input_stats=False
            ),
        )
    # inference leaves the running statistics as training left them
    torch.testing.assert_close((norm.running_mean, norm.running_var), running)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_the_memory_layout_changes_neither_the_weights_nor_the_logits(spatial_dims):
    """2-D U-Nets compute in channels-last memory (faster convolutions on
    the CPU): the weights drawn and the logits are those of the
    channels-first layout, up to rounding."""

    def network(memory_format):
        net = _networks.build_network(
            2,
            3,
            kind="unet",
            width=4,
            depth=2,
            spatial_dims=spatial_dims,
            generator=torch.Generator().manual_seed(0),
        )
        return net.to(memory_format=memory_format).eval()

    layout = {2: torch.channels_last, 3: torch.channels_last_3d}[spatial_dims]
    built = network(torch.preserve_format)
    first = next(built.parameters())
    assert first.is_contiguous(memory_format=layout) == (spatial_dims == 2)
    reference = network(torch.contiguous_format)
    for ours, theirs in zip(built.parameters(), reference.parameters()):
        assert_array_equal(ours.detach().numpy(), theirs.detach().numpy())
    x = torch.randn(
        (2, 2) + (20,) * spatial_dims, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        torch.testing.assert_close(built(x), reference(x))


def test_predict_gives_the_same_labels_whatever_the_forward_batch():
    X, _ = make_segmentation_images(5, (64, 64), noise=0.4, random_state=0)
    model = DeepGaussianMixture(
        3, max_iter=3, init_iter=2, random_state=0, device="cpu"
    )
    model.fit(X)
    together = model.predict(X)
    one_by_one = np.concatenate([model.predict(x[None]) for x in X])
    assert_array_equal(together, one_by_one)
    assert_array_equal(together, model.predict_proba(X).argmax(-1))


def test_a_training_batch_costs_its_largest_crop_not_the_union_of_its_crops(rng):
    """Masked images are cropped each to its own box (plus the margin),
    widened to the largest box of the batch, wherever the boxes lie; the
    crops hold every masked pixel at its value, and images of one box size
    share batches (sorted within groups of batches)."""
    X = rng.standard_normal((8, 1, 64, 64))
    mask = np.zeros((8, 64, 64), dtype=bool)
    for i, (row, col) in enumerate(rng.randint(0, 54, (8, 2))):
        size = 10 if i % 2 else 4  # two box sizes, alternating in the stack
        mask[i, row : row + size, col : col + size] = True
    scaling = _data.Scaling(np.zeros(1), 1.0, np.ones(1))
    batches = _data.ImageBatches(
        X, mask, scaling, batch_size=4, device=torch.device("cpu"), dtype=torch.float64
    )
    shapes = set()
    for batch in batches.shuffled(torch.Generator().manual_seed(0)):
        index = np.atleast_1d(batch.index)
        shapes.add(batch.mask.shape[1:])
        assert batch.mask.sum() == mask[index].sum()
        values = batch.x_lik[:, 0][batch.mask.bool()].sort().values
        assert_array_equal(values.numpy(), np.sort(X[index, 0][mask[index]]))
    # the box and a margin of 8 on each side, clipped at the image's edges
    assert max(max(s) for s in shapes) <= 10 + 2 * 8
    assert min(max(s) for s in shapes) <= 4 + 2 * 8


# torch's own AdamW, whatever a test patches
_ADAMW = torch.optim.AdamW


def _has_fused_adamw():
    try:
        _ADAMW([torch.zeros(1, requires_grad=True)], lr=0.1, fused=True)
    except RuntimeError:
        return False
    return True


def _without_fused_kernel(params, lr, fused=None):
    """AdamW as torch before 2.4 builds it for CPU parameters."""
    if fused:
        raise RuntimeError("`fused=True` requires CUDA parameters")
    return _ADAMW(params, lr=lr)


def _fused(model):
    return model._history.optimizer_state["param_groups"][0]["fused"]


def test_training_without_a_fused_optimizer_kernel(images, monkeypatch):
    """Where torch has no fused AdamW for the parameters' device (the CPU
    before torch 2.4), training takes the plain one, to the same labels."""
    X, _ = images
    fused = DeepGaussianMixture(3, **FAST).fit(X)
    monkeypatch.setattr(torch.optim, "AdamW", _without_fused_kernel)
    plain = DeepGaussianMixture(3, **FAST).fit(X)
    assert bool(_fused(fused)) == _has_fused_adamw()
    assert not _fused(plain)
    assert (plain.predict(X) == fused.predict(X)).mean() > 0.99


def test_a_warm_start_takes_the_optimizer_kernel_of_this_torch(images, monkeypatch):
    """Loading an optimizer state replaces its settings: a state saved by the
    plain loop (an earlier release) or by the fused kernel (a GPU, a newer
    torch) continues with the kernel this torch has here."""
    X, _ = images
    model = DeepGaussianMixture(3, warm_start=True, **FAST).fit(X)
    for group in model._history.optimizer_state["param_groups"]:
        group["fused"] = None
    model.fit(X)
    assert bool(_fused(model)) == _has_fused_adamw()
    for group in model._history.optimizer_state["param_groups"]:
        group["fused"] = True
    monkeypatch.setattr(torch.optim, "AdamW", _without_fused_kernel)
    model.fit(X)
    assert not _fused(model)
