"""Bad input gets a clear ValueError or TypeError; good input never crashes."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.exceptions import ConvergenceWarning

from skdgmm import DeepGaussianMixture

from .conftest import FAST

FAST_MODEL = dict(FAST, max_iter=2, init_iter=2)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    X=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int16, np.uint8]),
        shape=hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=7),
        elements=st.integers(0, 200),
    ),
    n_components=st.integers(1, 3),
)
def test_any_small_array_gives_a_result_or_a_clear_error(X, n_components):
    original = X.copy()
    model = DeepGaussianMixture(n_components, **FAST_MODEL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            labels = model.fit_predict(X)
    except (ValueError, TypeError) as error:
        assert str(error)  # a message that says what was expected
        return
    finally:
        np.testing.assert_array_equal(X, original)
    assert labels.shape == (X.shape[:1] if X.ndim == 2 else X.shape[:3])
    assert ((labels >= 0) & (labels < n_components)).all()
    scores = model.score_samples(X)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize(
    "X, error, match",
    [
        (np.zeros((2, 3, 4, 5, 6)), ValueError, "image stack"),
        (np.ones((4, 6, 6)) * np.nan, ValueError, "NaN"),
        (np.ones((4, 6, 6)) * np.inf, ValueError, "infinity"),
        (np.ones((4, 6, 6), dtype=complex), ValueError, "Complex"),
        (np.zeros((0, 6, 6)), ValueError, "0 sample"),
        (np.zeros((2, 0, 6)), ValueError, "empty image stack"),
        (np.array([["a", "b"], ["c", "d"]], dtype=object), ValueError, "convert"),
    ],
)
def test_bad_arrays_are_rejected_before_work(X, error, match):
    with pytest.raises(error, match=match):
        DeepGaussianMixture(2, **FAST_MODEL).fit(X)


def test_model_trained_elsewhere_predicts_on_cpu(rng):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    X = rng.standard_normal((2, 8, 8))
    model = DeepGaussianMixture(2, **FAST_MODEL).fit(X)
    model.set_params(device="cuda")  # as if trained on a GPU machine
    with pytest.warns(UserWarning, match="not available here; using the CPU"):
        labels = model.predict(X)
    assert labels.shape == X.shape
