"""Priors from labelled pixels: init_from_labels."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from skdgmm import DeepGaussianMixture
from skdgmm.datasets import make_segmentation_images
from skdgmm._data import intensity_ranges
from skdgmm.priors import init_from_labels

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def _reference(pixels, labels, K, covariance_type, reg):
    """The M-step of one-hot labels, written with numpy."""
    covs = [np.cov(pixels[labels == k].T, bias=True).reshape(2, 2) for k in range(K)]
    counts = np.bincount(labels, minlength=K)
    eye = np.eye(pixels.shape[1])
    if covariance_type == "full":
        return np.array([np.linalg.inv(c + reg * eye) for c in covs])
    if covariance_type == "tied":
        tied = sum(n * c for n, c in zip(counts, covs)) / counts.sum()
        return np.linalg.inv(tied + reg * eye)
    diag = np.array([np.diag(c) for c in covs]) + reg
    return 1 / diag if covariance_type == "diag" else 1 / diag.mean(1)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_parameters_are_the_m_step_of_the_labels(rng, covariance_type):
    X = rng.standard_normal((300, 2)) * [1.0, 3.0]
    labels = rng.randint(-1, 3, 300)
    init = init_from_labels(X, labels, covariance_type=covariance_type, reg_covar=1e-3)
    known, y = X[labels >= 0], labels[labels >= 0]
    assert_allclose(init["weights_init"], np.bincount(y) / len(y))
    assert_allclose(init["means_init"], [known[y == k].mean(0) for k in range(3)])
    assert_allclose(
        init["precisions_init"],
        _reference(known, y, 3, covariance_type, 1e-3),
        rtol=1e-8,
    )


def test_class_k_of_the_labels_is_component_k_of_the_fit():
    images, truth = make_segmentation_images(4, (24, 24), noise=0.15, random_state=0)
    # classes named in an order other than the intensity's
    names = np.array([2, 0, 1])
    partial = np.full_like(truth, -1)
    partial[0] = names[truth[0]]
    init = init_from_labels(images, partial)
    model = DeepGaussianMixture(
        3, means_init=init["means_init"], random_state=0, device="cpu"
    )
    labels = model.fit_predict(images[1:])
    assert (labels == names[truth[1:]]).mean() > 0.95


def test_images_with_channels_and_volumes(rng):
    X = rng.standard_normal((2, 6, 5, 3))
    labels = rng.randint(0, 2, (2, 6, 5))
    assert init_from_labels(X, labels)["means_init"].shape == (2, 3)
    volume = rng.standard_normal((2, 4, 6, 5))
    init = init_from_labels(
        volume,
        labels.reshape(2, 6, 5)[:, None].repeat(4, 1),
        spatial_dims=3,
        covariance_type="diag",
    )
    assert init["precisions_init"].shape == (2, 1)


def test_bad_labels_are_refused(rng):
    X = rng.standard_normal((2, 6, 6))
    with pytest.raises(ValueError, match="shape"):
        init_from_labels(X, np.zeros((2, 6, 5), int))
    with pytest.raises(TypeError, match="integers"):
        init_from_labels(X, np.zeros((2, 6, 6)))
    labels = np.zeros((2, 6, 6), int)
    with pytest.raises(ValueError, match=r"Classes \[1\] have no labelled pixel"):
        init_from_labels(X, labels, n_components=2)
    with pytest.raises(ValueError, match="no labelled pixel"):
        init_from_labels(X, np.full((2, 6, 6), -1))
    labels[0, 0, 0] = -2
    with pytest.raises(ValueError, match="-1 .unlabelled. or 0 .. 0"):
        init_from_labels(X, labels)


def test_the_input_is_not_modified(rng):
    X = rng.standard_normal((2, 6, 6))
    labels = rng.randint(-1, 2, (2, 6, 6))
    X0, labels0 = X.copy(), labels.copy()
    init_from_labels(X, labels)
    assert_array_equal(X, X0)
    assert_array_equal(labels, labels0)


def test_labels_of_any_integer_dtype(rng):
    X = rng.standard_normal((2, 6, 6))
    labels = rng.randint(0, 2, (2, 6, 6))
    reference = init_from_labels(X, labels)
    for dtype in (np.int8, np.int32, np.uint16):
        init = init_from_labels(X, labels.astype(dtype))
        assert_allclose(init["means_init"], reference["means_init"])


@pytest.mark.slow
def test_a_small_class_survives_a_collection_fit_from_a_prior(capsys):
    """The MNI152 slices inside the brain, a prior from one labelled slice:
    with the 20 iterations of pre-training, training emptied CSF (7 % of the
    pixels); the fit is trained again from a network closer to the initial
    EM, says so, and keeps every class where the prior put it."""
    from skdgmm.datasets import load_mni152
    from skdgmm.metrics import dice_score

    images, labels, mask = load_mni152()
    truth = np.where(mask, labels - 1, -1)
    partial = np.full_like(truth, -1)
    partial[0] = truth[0]
    model = DeepGaussianMixture(
        3, random_state=0, device="cpu", verbose=1, **init_from_labels(images, partial)
    )
    predicted = model.fit_predict(images, mask=mask)
    assert "Components [0] emptied in training" in capsys.readouterr().out
    shares = np.bincount(predicted[mask], minlength=3) / mask.sum()
    assert shares.min() > 0.03
    assert_allclose(model.weights_, shares, atol=0.05)
    # no matching: class k of the prior is component k
    assert dice_score(truth[mask], predicted[mask], labels=range(3)).min() > 0.7


def _named(names):
    """Four images, the first labelled with class ``names[t]`` for truth t."""
    images, truth = make_segmentation_images(4, (24, 24), noise=0.15, random_state=0)
    partial = np.full_like(truth, -1)
    partial[0] = np.asarray(names)[truth[0]]
    return images, truth, partial


@pytest.mark.parametrize("names", [[2, 0, 1], [1, 2, 0]])
def test_fit_with_labels_gives_class_k_of_the_labels(names):
    images, truth, partial = _named(names)
    model = DeepGaussianMixture(3, random_state=0, device="cpu")
    predicted = model.fit_predict(images, labels=partial)
    assert (predicted[1:] == np.asarray(names)[truth[1:]]).mean() > 0.95
    # weights describe the labels, as without them
    shares = np.bincount(predicted.ravel(), minlength=3) / predicted.size
    assert_allclose(model.weights_, shares, atol=0.05)


def test_labels_start_the_mixture_unless_an_init_is_given():
    images, _, partial = _named([2, 0, 1])
    init = init_from_labels(images, partial)
    model = DeepGaussianMixture(3, max_iter=0, random_state=0, device="cpu")
    # max_iter=0 returns the initialization, as GaussianMixture does
    assert_allclose(model.fit(images, labels=partial).means_, init["means_init"])
    means_init = init["means_init"][::-1] + 0.01
    model.set_params(means_init=means_init).fit(images, labels=partial)
    assert_allclose(model.means_, means_init)


def test_labels_of_tabular_data_and_inside_a_mask(rng):
    X = np.r_[rng.standard_normal((60, 2)), rng.standard_normal((60, 2)) + 6]
    labels = np.full(120, -1)
    labels[[0, 1, 60, 61]] = [1, 1, 0, 0]
    model = DeepGaussianMixture(2, max_iter=20, random_state=0, device="cpu")
    predicted = model.fit_predict(X, labels=labels)
    assert (predicted == np.repeat([1, 0], 60)).mean() > 0.95
    images, _, partial = _named([0, 1, 2])
    mask = np.ones(images.shape, dtype=bool)
    mask[0, :12] = False
    # labels outside the mask are ignored, but each class needs one inside
    DeepGaussianMixture(3, max_iter=0, device="cpu").fit(
        images, mask=mask, labels=partial
    )
    only_outside = np.where(mask, np.minimum(partial, 1), partial)
    with pytest.raises(ValueError, match=r"Classes \[2\] have no labelled pixel"):
        DeepGaussianMixture(3, device="cpu").fit(images, mask=mask, labels=only_outside)


def test_labels_outside_the_mask_are_ignored_and_any_integer_dtype_fits():
    images, _, partial = _named([0, 1, 2])
    mask = np.ones(images.shape, dtype=bool)
    mask[0, :12] = False

    def fitted_means(labels):
        model = DeepGaussianMixture(3, max_iter=0, device="cpu")
        return model.fit(images, mask=mask, labels=labels).means_

    # there is no class 7: outside the mask it is ignored
    assert_allclose(fitted_means(np.where(mask, partial, 7)), fitted_means(partial))
    # unsigned labels have no -1: every pixel labelled, as uint16 and as int64
    full = np.where(partial < 0, 0, partial)
    assert_allclose(fitted_means(full.astype(np.uint16)), fitted_means(full))


def test_bad_labels_are_refused_before_any_work(rng, monkeypatch):
    import skdgmm.mixture

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(skdgmm.mixture, "train", no_training)
    X = rng.standard_normal((2, 8, 8))
    labels = rng.randint(0, 2, (2, 8, 8))
    before = labels.copy()
    model = DeepGaussianMixture(2, device="cpu")
    with pytest.raises(TypeError, match="integers"):
        model.fit(X, labels=labels.astype(float))
    with pytest.raises(ValueError, match="shape"):
        model.fit(X, labels=labels[:, :7])
    with pytest.raises(ValueError, match="-1 .unlabelled. or 0 .. 1"):
        model.fit(X, labels=labels + 1)
    with pytest.raises(ValueError, match="no labelled pixel"):
        model.fit(X, labels=np.full_like(labels, -1))
    assert_array_equal(labels, before)
    assert not hasattr(model, "network_")


def test_labels_start_the_mixture_in_the_rescaled_units():
    """With rescale_intensity the initial mixture of labels= is the M-step
    of the labelled pixels as the network sees them, each mapped as its
    image (labels= was refused: the M-step was in the input's units)."""
    images, _, partial = _named([2, 0, 1])
    gains, offsets = np.array([2.0, 1.0, 0.5, 3.0]), np.array([1.0, 0.0, -0.5, 2.0])
    X = images * gains[:, None, None] + offsets[:, None, None]
    model = DeepGaussianMixture(
        3, rescale_intensity=True, max_iter=0, random_state=0, device="cpu"
    ).fit(X, labels=partial)
    slope, offset = model._intensity_rescaling.maps(intensity_ranges(X[:, None], None))
    mapped = X * slope[:, :, None] + offset[:, :, None]
    assert_allclose(model.means_, init_from_labels(mapped, partial)["means_init"])


def test_labels_name_the_classes_of_images_that_differ():
    images, truth, partial = _named([2, 0, 1])
    gains, offsets = np.array([2.0, 1.0, 0.5, 3.0]), np.array([1.0, 0.0, -0.5, 2.0])
    X = images * gains[:, None, None] + offsets[:, None, None]
    model = DeepGaussianMixture(3, random_state=0, device="cpu")
    predicted = model.fit_predict(X, labels=partial)
    # rescale_intensity="auto" rescaled them
    assert model._intensity_rescaling is not None
    assert (predicted[1:] == np.array([2, 0, 1])[truth[1:]]).mean() > 0.95


def test_a_warm_start_with_labels_learns_them():
    """The likelihood alone does not judge a fit to labels: a warm start
    with labels is never reverted to the model it continued."""
    images, truth, _ = _named([0, 1, 2])
    model = DeepGaussianMixture(3, warm_start=True, random_state=0, device="cpu")
    fitted = model.fit_predict(images)
    names = np.array([1, 2, 0])  # the fitted components renamed
    partial = np.full_like(truth, -1)
    partial[0] = names[fitted[0]]
    predicted = model.fit_predict(images, labels=partial)
    assert model.n_iter_ > 0
    assert (predicted[0] == partial[0]).mean() > 0.9


@pytest.mark.parametrize(
    "shape, spatial_dims, patch_pixels",
    [
        ((5, 40, 36), 2, 65536),  # masks: each batch cropped to its masks' box
        ((3, 40, 36), 2, 16 * 16),  # random patches
        ((2, 12, 16, 14), 3, 65536),  # volumes
    ],
)
def test_training_sees_each_label_at_its_pixel(
    rng, monkeypatch, shape, spatial_dims, patch_pixels
):
    """The labels travel with their pixels through crops, patches and
    volumes: in every training batch, the pixels labelled 1 are brighter
    than those labelled 0, as in the images (label = which of two levels)."""
    import skdgmm._losses

    levels = rng.randint(0, 2, shape)
    X = levels + 0.01 * rng.standard_normal(shape)
    mask = np.zeros(shape, dtype=bool)
    mask[(slice(None), *(slice(2 + i, s - 3 + i) for i, s in enumerate(shape[1:])))] = (
        True
    )
    for i in range(1, shape[0]):  # masks at different places: crops differ
        mask[i] = np.roll(mask[0], i, axis=0)
    labels = np.full(shape, -1)
    labels[:2] = levels[:2]
    seen = []
    original = skdgmm._losses.label_energy

    def checked(logits, batch):
        x, known = batch.x_lik[:, 0], (batch.labels >= 0) & (batch.mask > 0)
        bright, dark = x[known & (batch.labels == 1)], x[known & (batch.labels == 0)]
        if len(bright) and len(dark):
            seen.append(bool(bright.min() > dark.max()))
        return original(logits, batch)

    monkeypatch.setattr(skdgmm._losses, "label_energy", checked)
    model = DeepGaussianMixture(
        2,
        max_iter=2,
        init_iter=1,
        batch_size=2,
        patch_pixels=patch_pixels,
        spatial_dims=spatial_dims,
        random_state=0,
        device="cpu",
    )
    model.fit(X, mask=mask, labels=labels)
    assert seen and all(seen)
