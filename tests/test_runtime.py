"""Inference in ONNX Runtime (the ``onnx`` extra): the same labels as torch's."""

import pickle
import threading

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone

from skdgmm import DeepGaussianMixture, _data, _networks, _runtime
from skdgmm.datasets import make_segmentation_images

from .conftest import FAST

requires_onnxruntime = pytest.mark.skipif(
    not _runtime.onnxruntime_available(), reason="ONNX Runtime is not installed"
)


def _images(shape, n_channels=1, n_images=3, random_state=0):
    X, _ = make_segmentation_images(
        n_images, shape, n_channels=n_channels, noise=0.3, random_state=random_state
    )
    return X


def _masked_fit(shape, rows, cols):
    """Two images, a mask of the box ``rows`` x ``cols``, a model fitted
    inside it."""
    X = _images(shape, n_images=2)
    mask = np.zeros(X.shape, dtype=bool)
    mask[:, rows, cols] = True
    return X, mask, DeepGaussianMixture(3, **FAST).fit(X, mask=mask)


def _both(model, X, **kwargs):
    """Labels and probabilities of ``model`` in torch, then in ONNX Runtime."""
    out = []
    for runtime in ("torch", "onnxruntime"):
        model.set_params(runtime=runtime)
        out.append((model.predict(X, **kwargs), model.predict_proba(X, **kwargs)))
    return out


def _assert_same(model, X, **kwargs):
    (labels, proba), (onnx_labels, onnx_proba) = _both(model, X, **kwargs)
    assert len(np.unique(labels[labels >= 0])) > 1  # not a trivial segmentation
    assert_array_equal(onnx_labels, labels)
    assert_allclose(onnx_proba, proba, atol=1e-4)


@requires_onnxruntime
@pytest.mark.parametrize(
    "shape, n_channels, params",
    [
        ((32, 40), 1, {}),  # a stack of 2-D images
        ((24, 24), 3, {}),  # channels last
        ((12, 16, 12), 1, {"spatial_dims": 3}),  # volumes
        ((48, 48), 1, {"patch_pixels": 256}),  # trained on patches: running statistics
        ((20, 28), 1, {"spatially_variant": True}),
    ],
)
def test_labels_as_torch_in_every_layout(shape, n_channels, params):
    X = _images(shape, n_channels)
    model = DeepGaussianMixture(3, **FAST, **params).fit(X)
    if "patch_pixels" in params:
        assert bool(model.network_.trained_on_patches)
    _assert_same(model, X)
    # new images of another size: dynamic spatial and batch axes
    _assert_same(model, _images(tuple(s + 5 for s in shape), n_channels, 2, 1))


@requires_onnxruntime
def test_labels_as_torch_with_a_mask_and_in_tiles(monkeypatch):
    X, mask, model = _masked_fit((80, 72), slice(10, 70), slice(5, 60))
    _assert_same(model, X, mask=mask)
    # tiles of 48 x 48 pixels, normalised by the running statistics
    for module in (_data, _networks):
        monkeypatch.setattr(module, "TILE_PIXELS", 48 * 48)
    _assert_same(model, X)


@requires_onnxruntime
def test_a_single_image_in_channels_first_layout():
    X = _images((32, 32), n_channels=2, n_images=2)
    model = DeepGaussianMixture(2, channel_axis=1, **FAST)
    model.fit(np.moveaxis(X, -1, 1))
    _assert_same(model, np.moveaxis(X, -1, 1))


@requires_onnxruntime
def test_inference_changes_nothing_of_the_model():
    X = _images((32, 32))
    model = DeepGaussianMixture(3, runtime="onnxruntime", **FAST).fit(X)
    before = {k: v.clone() for k, v in model.network_.state_dict().items()}
    attributes = set(vars(model))
    model.predict(X)
    assert set(vars(model)) == attributes
    after = model.network_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.network_.training
    # sessions live outside the estimator: it pickles and clones
    restored = pickle.loads(pickle.dumps(model))
    assert_array_equal(restored.predict(X), model.predict(X))
    assert clone(model).get_params()["runtime"] == "onnxruntime"


@requires_onnxruntime
def test_a_refit_gets_the_new_network():
    X, Y = _images((32, 32)), _images((32, 32), random_state=5)
    model = DeepGaussianMixture(3, **FAST).fit(X)
    model.predict(X)
    model.set_params(random_state=3).fit(Y)
    _assert_same(model, Y)


@requires_onnxruntime
@pytest.mark.parametrize("how", ["load_state_dict", "data"])
def test_weights_changed_in_place_are_exported_again(how):
    X = _images((32, 32))
    model = DeepGaussianMixture(3, runtime="onnxruntime", **FAST).fit(X)
    before = model.predict_proba(X)
    other = DeepGaussianMixture(3, **FAST).set_params(random_state=4).fit(X)
    if how == "load_state_dict":
        model.network_.load_state_dict(other.network_.state_dict())
    else:  # through .data, which no version counter records
        for mine, theirs in zip(
            model.network_.parameters(), other.network_.parameters()
        ):
            mine.data.copy_(theirs.data)
    assert np.abs(model.predict_proba(X) - before).max() > 1e-2
    _assert_same(model, X)


@requires_onnxruntime
def test_threads_get_the_sequential_result():
    X = _images((48, 48), n_images=2)
    model = DeepGaussianMixture(3, patch_pixels=256, **FAST).fit(X)
    expected = model.set_params(runtime="torch").predict_proba(X)
    model.set_params(runtime="onnxruntime")
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = model.predict_proba(X)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for result in results:
        assert_allclose(result, expected, atol=1e-4)


@requires_onnxruntime
def test_torch_where_onnx_runtime_does_not_apply():
    network = torch.nn.Conv2d(1, 2, 1)
    cpu = torch.device("cpu")
    for runtime in ("auto", "onnxruntime"):
        # tabular data's per-pixel network, float64, another device
        assert _runtime.inference_network(network, runtime, cpu, torch.float32) is (
            network
        )
    unet = DeepGaussianMixture(2, **FAST).fit(_images((16, 16))).network_
    assert _runtime.inference_network(unet, "torch", cpu, torch.float32) is unet
    assert _runtime.inference_network(unet, "auto", cpu, torch.float64) is unet
    meta = torch.device("meta")
    assert _runtime.inference_network(unet, "auto", meta, torch.float32) is unet
    assert _runtime.inference_network(unet, "auto", cpu, torch.float32) is not unet


def test_missing_onnx_runtime(monkeypatch):
    X = _images((16, 16))
    model = DeepGaussianMixture(2, **FAST).fit(X)
    monkeypatch.setattr(_runtime, "onnxruntime_available", lambda: False)
    expected = model.set_params(runtime="torch").predict(X)
    assert_array_equal(model.set_params(runtime="auto").predict(X), expected)
    with pytest.raises(ImportError, match=r"pip install 'skdgmm\[onnx\]'"):
        model.set_params(runtime="onnxruntime").predict(X)


def test_to_onnx_needs_onnx_only(monkeypatch, tmp_path):
    import importlib.util

    model = DeepGaussianMixture(2, **FAST).fit(_images((16, 16)))
    # deployment outside Python: onnx without ONNX Runtime exports
    monkeypatch.setattr(_runtime, "onnxruntime_available", lambda: False)
    model.to_onnx(tmp_path / "model.onnx")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "onnx" else find_spec(name, *args),
    )
    with pytest.raises(ImportError, match=r"to_onnx needs onnx"):
        model.to_onnx(tmp_path / "again.onnx")


def _deployed(model, X, tmp_path):
    """Probabilities and labels of ``model.to_onnx`` run by ONNX Runtime on
    the images X (channels last, as the estimator takes them)."""
    import onnxruntime

    path = model.to_onnx(tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path))
    x = np.moveaxis(X if X.ndim > model.spatial_dims + 1 else X[..., None], -1, 1)
    return session.run(None, {"x": x.astype(np.float32)})


@requires_onnxruntime
@pytest.mark.parametrize(
    "shape, n_channels, params",
    [
        ((32, 40), 1, {}),
        ((24, 24), 3, {}),
        ((12, 16, 12), 1, {"spatial_dims": 3}),
        ((48, 48), 1, {"patch_pixels": 256}),
    ],
)
def test_to_onnx_labels_new_images_as_predict(tmp_path, shape, n_channels, params):
    model = DeepGaussianMixture(3, **FAST, **params).fit(_images(shape, n_channels))
    # a batch and sizes other than training's (odd ones padded in the graph)
    X = _images(tuple(s + 5 for s in shape), n_channels, 2, 1)
    model.set_params(runtime="torch")
    probabilities, labels = _deployed(model, X, tmp_path)
    expected = model.predict(X)
    assert len(np.unique(expected)) > 1
    assert_array_equal(labels, expected)
    assert_allclose(
        np.moveaxis(probabilities, 1, -1), model.predict_proba(X), atol=1e-4
    )


@requires_onnxruntime
def test_to_onnx_of_a_masked_model_labels_the_box_around_the_mask(tmp_path):
    X, mask, model = _masked_fit((64, 64), slice(20, 44), slice(16, 40))
    # the mask's box widened by 8 pixels, as predict crops it
    box = (slice(None), slice(12, 52), slice(8, 48))
    _, labels = _deployed(model, X[box], tmp_path)
    expected = model.predict(X, mask=mask)[box]
    inside = mask[box]
    assert len(np.unique(expected[inside])) > 1
    assert_array_equal(labels[inside], expected[inside])


def test_to_onnx_refuses_what_one_pass_does_not_hold(rng, tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        DeepGaussianMixture(2).to_onnx(tmp_path / "m.onnx")
    tabular = DeepGaussianMixture(2, **FAST).fit(rng.standard_normal((60, 2)))
    with pytest.raises(ValueError, match="tabular"):
        tabular.to_onnx(tmp_path / "m.onnx")
    rescaled = DeepGaussianMixture(2, rescale_intensity=True, **FAST)
    with pytest.raises(ValueError, match="rescale_intensity"):
        rescaled.fit(_images((16, 16), n_images=2)).to_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
