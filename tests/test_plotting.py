import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline

from skdgmm import DeepGaussianMixture, PixelwiseMixture, SpatialFeatures
from skdgmm.plotting import plot_loss_curve, plot_overlay, plot_probabilities

from .conftest import FAST

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_overlay_colours_labels_and_leaves_the_rest_grey(images):
    X, truth = images
    mask = np.zeros(truth[0].shape, dtype=bool)
    mask[:10] = True
    ax = plot_overlay(X[0], truth[0], mask=mask, alpha=0.5, title="truth")
    (drawn,) = ax.images
    rgb = drawn.get_array()
    assert rgb.shape == truth[0].shape + (3,)
    assert ax.get_title() == "truth"
    # outside the mask the picture is the grey image: equal channels
    outside = rgb[~mask]
    np.testing.assert_allclose(outside[:, 0], outside[:, 1])
    np.testing.assert_allclose(outside[:, 0], outside[:, 2])
    inside = rgb[mask]
    assert np.ptp(inside, axis=1).max() > 0.1


def test_overlay_of_minus_one_labels_is_the_image(images):
    X, truth = images
    labels = np.where(truth[0] == 0, -1, truth[0])
    rgb = plot_overlay(X[0], labels).images[0].get_array()
    background = rgb[labels == -1]
    np.testing.assert_allclose(background[:, 0], background[:, 2])


def test_overlay_boundaries_and_given_axes(images):
    X, truth = images
    fig, axes = plt.subplots(1, 2)
    ax = plot_overlay(
        np.stack([X[0], -X[0]], -1), truth[0], ax=axes[1], boundaries=True
    )
    assert ax is axes[1]
    assert len(axes[0].images) == 0 and len(axes[1].images) == 1
    rgb = ax.images[0].get_array()
    # boundary pixels get the orange outline, the rest stays grey
    orange = np.all(np.isclose(rgb, (1.0, 0.5, 0.0)), axis=-1)
    assert 0 < orange.sum() < orange.size / 2


def test_overlay_rejects_stacks_and_mismatched_labels(images):
    X, truth = images
    with pytest.raises(ValueError, match="one slice of a volume"):
        plot_overlay(X[:, :, :, None, None], truth)
    with pytest.raises(ValueError, match="shape of the image"):
        plot_overlay(X[0], truth[0][:5])


@pytest.mark.parametrize("which", ["stack and labels", "stack and one label map"])
def test_overlay_of_a_stack_says_that_it_wants_one_image(images, which):
    X, truth = images  # (3, 20, 17): read before as one image of 17 channels
    labels = truth if which == "stack and labels" else truth[0]
    with pytest.raises(ValueError, match=r"one 2-D image.*shape \(3, 20, 17\)"):
        plot_overlay(X, labels)


def test_probabilities_one_map_per_component_and_uncertainty(images):
    X, _ = images
    mask = np.ones(X.shape, dtype=bool)
    mask[:, :, :4] = False
    model = PixelwiseMixture(GaussianMixture(3, random_state=0)).fit(X, mask=mask)
    proba = model.predict_proba(X, mask=mask)[0]
    axes = plot_probabilities(proba)
    assert len(axes) == 4
    assert [len(ax.images) for ax in axes] == [1, 1, 1, 1]
    for k in range(3):
        shown = axes[k].images[0].get_array()
        assert shown.shape == proba.shape[:2]
        np.testing.assert_allclose(shown[mask[0]], proba[mask[0], k])
        # pixels outside the mask (all probabilities 0) are blank
        assert shown.mask[~mask[0]].all()
    entropy = axes[3].images[0].get_array()
    assert entropy.min() >= 0 and entropy.max() <= np.log(3) + 1e-12
    assert entropy.mask[~mask[0]].all()
    # two colour bars: probabilities and entropy
    assert len(axes[0].figure.axes) == 6


def test_probabilities_in_given_axes_without_uncertainty():
    proba = np.full((5, 6, 2), 0.5)
    fig, axes = plt.subplots(1, 2)
    drawn = plot_probabilities(proba, axes=axes, uncertainty=False, colorbar=False)
    assert list(drawn) == list(axes)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="Expected 3 axes"):
        plot_probabilities(proba, axes=axes)
    with pytest.raises(ValueError, match="one image"):
        plot_probabilities(proba[None])


def test_uniform_posterior_is_maximally_uncertain():
    proba = np.full((4, 4, 3), 1 / 3)
    axes = plot_probabilities(proba, colorbar=False)
    np.testing.assert_allclose(axes[-1].images[0].get_array(), np.log(3))


def test_loss_curve_draws_loss_and_log_likelihood(images):
    X, _ = images
    pipe = make_pipeline(
        SpatialFeatures(sigmas=(1,)), DeepGaussianMixture(3, **{**FAST, "tol": 0.0})
    ).fit(X)
    model = pipe[-1]
    ax = plot_loss_curve(pipe)
    (loss,) = ax.lines
    np.testing.assert_array_equal(loss.get_xdata(), np.arange(1, FAST["max_iter"] + 1))
    np.testing.assert_allclose(loss.get_ydata(), model.loss_curve_)
    (twin,) = [other for other in ax.figure.axes if other is not ax]
    (likelihood,) = twin.lines
    np.testing.assert_allclose(likelihood.get_ydata(), model.lower_bounds_)
    assert len(ax.get_legend().get_texts()) == 2


def test_loss_curve_needs_a_fitted_deep_mixture(images):
    X, _ = images
    with pytest.raises(NotFittedError):
        plot_loss_curve(DeepGaussianMixture(2))
    with pytest.raises(TypeError, match="no loss_curve_"):
        plot_loss_curve(GaussianMixture(2).fit(X.reshape(-1, 1)))
