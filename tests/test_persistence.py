"""skdgmm.save and skdgmm.load: persistence that runs no code from the file."""

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from sklearn.cluster import KMeans
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import skdgmm
from skdgmm import DeepGaussianMixture, PixelwiseMixture, SpatialFeatures
from skdgmm.svgmm import SpatiallyVariantGaussianMixture

from .conftest import FAST

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST_MODEL = dict(FAST, max_iter=2, init_iter=2)

MODELS = {
    "deep": lambda: DeepGaussianMixture(3, **FAST_MODEL),
    "deep, patches, float32": lambda: DeepGaussianMixture(
        3, patch_pixels=64, covariance_type="diag", **FAST_MODEL
    ),
    "deep-variant": lambda: DeepGaussianMixture(
        3, spatially_variant=True, covariance_type="tied", device=torch.device("cpu"),
        **{k: v for k, v in FAST_MODEL.items() if k != "device"},
    ),
    "pixelwise GaussianMixture": lambda: PixelwiseMixture(
        GaussianMixture(3, random_state=np.random.RandomState(0))
    ),
    "pixelwise KMeans": lambda: PixelwiseMixture(KMeans(3, n_init=1, random_state=0)),
    "pixelwise Bayesian": lambda: PixelwiseMixture(
        BayesianGaussianMixture(n_components=3, random_state=0)
    ),
    "svgmm": lambda: SpatiallyVariantGaussianMixture(3, max_iter=3, random_state=0),
    "features": lambda: SpatialFeatures(sigmas=(1.0, 2.0)),
    "pipeline": lambda: make_pipeline(
        SpatialFeatures(sigmas=(1.0,)), DeepGaussianMixture(3, **FAST_MODEL)
    ),
}


def _outputs(model, X, mask):
    final = model[-1] if hasattr(model, "steps") else model
    kwargs = {} if hasattr(model, "steps") else {"mask": mask}
    names = ("transform", "predict", "predict_proba", "score_samples", "score")
    outputs = []
    for name in names:
        if hasattr(final, name) and hasattr(model, name):
            outputs.append(getattr(model, name)(X, **kwargs))
    return outputs


def _assert_same_state(a, b):
    assert type(a) is type(b)
    assert sorted(vars(a)) == sorted(vars(b))
    for name, value in vars(a).items():
        other = getattr(b, name)
        if hasattr(value, "get_params"):
            _assert_same_state(value, other)
        elif name == "steps":
            assert [n for n, _ in value] == [n for n, _ in other]
            for (_, x), (_, y) in zip(value, other):
                _assert_same_state(x, y)
        elif isinstance(value, torch.nn.Module):
            assert type(value) is type(other) and value.training == other.training
            for (key, x), (key_b, y) in zip(
                value.state_dict().items(), other.state_dict().items()
            ):
                assert key == key_b
                assert torch.equal(x, y), key
        elif isinstance(value, np.ndarray):
            assert value.dtype == other.dtype, name
            assert_array_equal(value, other)
        elif isinstance(value, (list, tuple)):
            assert type(value) is type(other) and len(value) == len(other), name
            for x, y in zip(value, other):
                assert type(x) is type(y), name
                assert_array_equal(x, y)
        elif isinstance(value, np.random.RandomState):
            assert_array_equal(value.get_state()[1], other.get_state()[1])
        else:
            assert type(value) is type(other), name
            assert repr(value) == repr(other), name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_load_round_trip_gives_identical_outputs(images, tmp_path, name):
    X, labels = images
    mask = labels > 0
    if "float32" in name:
        X = X.astype(np.float32)
    model = MODELS[name]()
    if hasattr(model, "steps"):
        model.fit(X)
        mask = None
    else:
        model.fit(X, mask=mask)
    skdgmm.save(model, tmp_path / "model.skdgmm")
    loaded = skdgmm.load(tmp_path / "model.skdgmm")
    _assert_same_state(model, loaded)
    for got, expected in zip(_outputs(loaded, X, mask), _outputs(model, X, mask)):
        assert_array_equal(got, expected)
    if "patches" in name:
        assert bool(loaded.network_.trained_on_patches)
    # pickle keeps working, and agrees
    unpickled = pickle.loads(pickle.dumps(model))
    for got, expected in zip(_outputs(unpickled, X, mask), _outputs(loaded, X, mask)):
        assert_array_equal(got, expected)


@pytest.mark.parametrize("name", ["deep", "pixelwise KMeans", "features"])
def test_unfitted_and_tabular_models_round_trip(rng, tmp_path, name):
    model = MODELS[name]()
    skdgmm.save(model, tmp_path / "unfitted.skdgmm")
    _assert_same_state(model, skdgmm.load(tmp_path / "unfitted.skdgmm"))
    X = rng.standard_normal((40, 2))
    model.fit(X)
    skdgmm.save(model, tmp_path / "tabular.skdgmm")
    loaded = skdgmm.load(tmp_path / "tabular.skdgmm")
    _assert_same_state(model, loaded)
    for got, expected in zip(_outputs(loaded, X, None), _outputs(model, X, None)):
        assert_array_equal(got, expected)


def test_feature_names_round_trip(tmp_path, rng):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(rng.standard_normal((40, 2)), columns=["t1", "t2"])
    model = DeepGaussianMixture(2, **FAST_MODEL).fit(X)
    skdgmm.save(model, tmp_path / "model.skdgmm")
    loaded = skdgmm.load(tmp_path / "model.skdgmm")
    assert_array_equal(loaded.feature_names_in_, ["t1", "t2"])
    assert_array_equal(loaded.predict(X), model.predict(X))


def test_load_unpickles_nothing(images, tmp_path, monkeypatch):
    X, _ = images
    model = DeepGaussianMixture(3, **FAST_MODEL).fit(X)
    skdgmm.save(model, tmp_path / "model.skdgmm")

    def refuse(*args, **kwargs):
        raise AssertionError("load unpickled")

    for name in ("load", "loads", "Unpickler", "_Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    loaded = skdgmm.load(tmp_path / "model.skdgmm")
    monkeypatch.undo()
    assert_array_equal(loaded.predict(X), model.predict(X))


class _Payload:
    """Unpickling it would run code: it writes a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _rewrite(path, name, data):
    """``path`` with the member ``name`` replaced by ``data``."""
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)


def test_a_malicious_file_runs_no_code(images, tmp_path):
    X, _ = images
    path = tmp_path / "model.skdgmm"
    skdgmm.save(DeepGaussianMixture(3, **FAST_MODEL).fit(X), path)
    witness = tmp_path / "pwned"
    # pickled code in place of the network weights
    _rewrite(path, "networks/0.pt", pickle.dumps(_Payload(witness)))
    with pytest.raises(ValueError, match="holds more than tensors"):
        skdgmm.load(path)
    assert not witness.exists()
    # a class outside scikit-learn and skdgmm
    skdgmm.save(DeepGaussianMixture(3), path)
    with zipfile.ZipFile(path) as archive:
        header = json.loads(archive.read("estimator.json"))
    for name in ("os:system", "builtins:eval", "subprocess:Popen"):
        header["estimator"]["__estimator__"] = name
        _rewrite(path, "estimator.json", json.dumps(header))
        with pytest.raises(ValueError, match="creates only estimators"):
            skdgmm.load(path)
    # an object array in the arrays needs pickle: refused
    skdgmm.save(DeepGaussianMixture(3, **FAST_MODEL).fit(X), path)
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Payload(witness)], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path) as archive:
        npz = archive.read("arrays.npz")
    packed = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(npz)) as arrays, zipfile.ZipFile(packed, "w") as out:
        for member in arrays.namelist():
            out.writestr(member, arrays.read(member))
        out.writestr("a0.npy", buffer.getvalue())
    _rewrite(path, "arrays.npz", packed.getvalue())
    with pytest.raises(ValueError, match="pickle"):
        skdgmm.load(path)
    assert not witness.exists()


def test_not_a_saved_model_is_refused(tmp_path):
    path = tmp_path / "model.skdgmm"
    path.write_bytes(pickle.dumps(DeepGaussianMixture()))
    with pytest.raises(ValueError, match="not a file written by skdgmm.save"):
        skdgmm.load(path)


def test_what_cannot_be_saved_without_pickle_is_refused_clearly(images, tmp_path):
    with pytest.raises(TypeError, match="pickle, joblib or skops"):
        skdgmm.save(
            make_pipeline(FunctionTransformer(np.log1p), GaussianMixture()),
            tmp_path / "model.skdgmm",
        )
    with pytest.raises(TypeError, match="saves estimators"):
        skdgmm.save([1, 2], tmp_path / "model.skdgmm")
