import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imread, imsave

import skdgmm
from skdgmm import DeepGaussianMixture
from skdgmm.cli import main
from skdgmm.cli.pictures import COLOURS
from skdgmm.datasets import make_segmentation_images
from skdgmm.metrics import match_labels

from .conftest import interrupt_step

tifffile = pytest.importorskip("tifffile")  # installed with scikit-image

# the FAST settings of conftest, as options
FAST = ["--max-iter", "5", "--random-state", "0", "--device", "cpu"]


def _to_uint8(image):
    return (np.clip(image / 2.0, 0.0, 1.0) * 255).astype(np.uint8)


@pytest.fixture
def pngs(tmp_path):
    """Two 32x32 grey PNG images of two classes, and their labels."""
    images, truth = make_segmentation_images(
        2, (32, 32), n_classes=2, noise=0.1, random_state=0
    )
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"image{i}.png")
        imsave(paths[-1], _to_uint8(image), check_contrast=False)
    return paths, truth


def _run(*args):
    # options given in args come last and override FAST
    return main(["segment", *FAST, *map(str, args)])


def _usage_error(capsys, *args):
    """Run the command, expect exit status 2, return the error message."""
    with pytest.raises(SystemExit) as exit_info:
        _run(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: skdgmm segment" in err and "Traceback" not in err
    return err


def test_png_label_maps_and_overlays(pngs, tmp_path, capsys):
    paths, truth = pngs
    out = tmp_path / "out"
    assert _run(*paths, "-k", 2, "-o", out, "--overlay") == 0
    assert sorted(os.listdir(out)) == [
        "image0_labels.png",
        "image0_overlay.png",
        "image0_preview.png",
        "image1_labels.png",
        "image1_overlay.png",
        "image1_preview.png",
    ]
    for i in range(2):
        labels = imread(out / f"image{i}_labels.png")
        assert labels.shape == (32, 32) and labels.dtype == np.uint8
        assert set(np.unique(labels)) == {0, 1}
        # two well separated classes: the labels are the truth up to naming
        matched = match_labels(truth[i], labels, [0, 1], [0, 1])
        assert np.mean(matched == truth[i]) > 0.95
        overlay = imread(out / f"image{i}_overlay.png")
        assert overlay.shape == (32, 32, 3)
        # the preview shows component k in the k-th colour, not near-black
        preview = imread(out / f"image{i}_preview.png")
        assert preview.shape == (32, 32, 3)
        for k in (0, 1):
            assert (preview[labels == k] == COLOURS[k][1]).all()
    printed = capsys.readouterr().out
    assert "wrote" in printed and "preview colours: 0 red, 1 green" in printed


def test_mask_and_spatially_variant(pngs, tmp_path):
    paths, _ = pngs
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[4:28, 8:24] = 255
    imsave(tmp_path / "mask.png", mask, check_contrast=False)
    out = tmp_path / "out"
    _run(paths[0], "-k", 3, "-o", out, "--mask", tmp_path / "mask.png")
    _run(paths[0], "-k", 3, "-o", out, "--force", "--spatially-variant")
    # the second run overwrote the first: labels everywhere
    assert (imread(out / "image0_labels.png") < 3).all()
    _run(paths[0], "-k", 3, "-o", out, "--force", "--mask", tmp_path / "mask.png")
    labels = imread(out / "image0_labels.png")
    assert (labels[mask == 0] == 255).all()
    assert set(np.unique(labels[mask > 0])) <= {0, 1, 2}
    # black outside the mask in the preview
    assert (imread(out / "image0_preview.png")[mask == 0] == 0).all()


def test_tiff_stays_tiff_with_float_intensities(tmp_path):
    images, _ = make_segmentation_images(1, (32, 32), n_channels=2, random_state=0)
    imsave(tmp_path / "cells.tif", images[0].astype(np.float32))
    _run(tmp_path / "cells.tif", "-k", 3, "-o", tmp_path)
    labels = imread(tmp_path / "cells_labels.tif")
    assert labels.shape == (32, 32) and labels.dtype == np.uint8
    assert labels.max() <= 2


def test_nifti_volume_keeps_the_affine(tmp_path, capsys):
    nibabel = pytest.importorskip("nibabel")
    volume, _ = make_segmentation_images(1, (12, 16, 16), random_state=0)
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = (10, -4, 3)
    nibabel.save(
        nibabel.Nifti1Image(volume[0].astype(np.float32), affine),
        tmp_path / "scan.nii.gz",
    )
    _run(tmp_path / "scan.nii.gz", "-k", 3, "-o", tmp_path, "--overlay")
    written = nibabel.load(tmp_path / "scan_labels.nii.gz")
    np.testing.assert_allclose(written.affine, affine)
    labels = np.asarray(written.dataobj)
    assert labels.shape == (12, 16, 16) and labels.dtype == np.uint8
    assert labels.max() <= 2
    # the pictures show the middle slice across the shortest axis, and say so
    assert imread(tmp_path / "scan_overlay_axis0_slice6.png").shape == (16, 16, 3)
    preview = imread(tmp_path / "scan_preview_axis0_slice6.png")
    assert (preview[labels[6] == 0] == COLOURS[0][1]).all()
    assert "(slice 6 along axis 0 of the label map)" in capsys.readouterr().out


def test_existing_outputs_are_kept_without_force(pngs, tmp_path, capsys):
    paths, _ = pngs
    (tmp_path / "image0_labels.png").write_bytes(b"precious")
    err = _usage_error(capsys, paths[0], "-k", 2, "-o", tmp_path)
    assert "output exists (use --force to overwrite)" in err
    assert (tmp_path / "image0_labels.png").read_bytes() == b"precious"


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.png", "-k", 2], "missing.png: no such file"),
        (["junk.png", "-k", 2], "junk.png: cannot read this image"),
        (["image0.png", "-k", 0], "-k/--n-components: must be at least 1, got 0"),
        (["image0.png", "-k", "two"], "expected an integer, got 'two'"),
        (["image0.png", "-k", 300], "at most 255 components"),
        (["image0.png", "small.png", "-k", 2], "must have the same shape"),
        (
            ["image0.png", "-k", 2, "--mask", "small.png"],
            "the mask has shape (8, 8), the images (32, 32)",
        ),
        (
            ["image0.png", "image1.png", "-k", 2, "--mask"] + ["small.png"] * 3,
            "one mask for all images or one per image; got 3 masks for 2",
        ),
        (["image0.png", "-k", 2, "--spatial-dims", 3], "expected a 3-D image"),
        (["image0.png", "-k", 2, "--device", "tpu"], "device must be 'auto'"),
    ],
)
def test_usage_errors(pngs, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    imsave(
        tmp_path / "small.png", np.zeros((8, 8), dtype=np.uint8), check_contrast=False
    )
    err = _usage_error(capsys, *args, "-o", "out")
    assert message in err
    assert not (tmp_path / "out").exists()


def test_missing_nibabel_is_explained(tmp_path, capsys, monkeypatch):
    (tmp_path / "scan.nii").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "nibabel", None)  # import fails
    err = _usage_error(capsys, tmp_path / "scan.nii", "-k", 2, "-o", tmp_path)
    assert 'pip install "skdgmm[nifti]"' in err


def test_python_dash_m(pngs, tmp_path):
    paths, _ = pngs
    command = [sys.executable, "-m", "skdgmm", "segment", str(paths[0]), "-k", "2"]
    # the checkout's skdgmm, installed or not
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        command + ["-o", str(tmp_path / "out"), *FAST],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert imread(tmp_path / "out" / "image0_labels.png").shape == (32, 32)


def _outputs(directory):
    return sorted(os.listdir(directory)) if directory.exists() else []


@pytest.mark.parametrize("force", [False, True])
def test_ctrl_c_during_training_writes_nothing(
    pngs, tmp_path, capsys, monkeypatch, force
):
    paths, _ = pngs
    out = tmp_path / "out"
    if force:  # earlier results are kept too
        assert _run(paths[0], "-k", 2, "-o", out) == 0
    before = {name: (out / name).read_bytes() for name in _outputs(out)}
    interrupt_step(monkeypatch, at=3)
    capsys.readouterr()
    assert _run(paths[0], "-k", 2, "-o", out, "--force") == 130
    err = capsys.readouterr().err
    assert "training was interrupted (Ctrl-C); nothing written" in err
    assert "--keep-interrupted" in err
    assert {name: (out / name).read_bytes() for name in _outputs(out)} == before


def test_keep_interrupted_writes_and_says_so(pngs, tmp_path, capsys, monkeypatch):
    paths, _ = pngs
    out = tmp_path / "out"
    interrupt_step(monkeypatch, at=3)
    assert _run(paths[0], "-k", 2, "-o", out, "--keep-interrupted") == 0
    err = capsys.readouterr().err
    assert "interrupted" in err and "writing the labels of the interrupted" in err
    assert _outputs(out) == ["image0_labels.png", "image0_preview.png"]
    assert imread(out / "image0_labels.png").shape == (32, 32)


def test_ctrl_c_before_any_model_writes_nothing(pngs, tmp_path, capsys, monkeypatch):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    paths, _ = pngs
    monkeypatch.setattr(DeepGaussianMixture, "fit_predict", interrupted)
    out = tmp_path / "out"
    assert _run(paths[0], "-k", 2, "-o", out, "--keep-interrupted") == 130
    assert "no model to keep" in capsys.readouterr().err
    assert _outputs(out) == []


def test_ctrl_c_while_writing_leaves_earlier_outputs(pngs, tmp_path, monkeypatch):
    from skdgmm.cli import pictures

    paths, _ = pngs
    out = tmp_path / "out"
    _run(paths[0], "-k", 2, "-o", out, "--random-state", 1)
    before = {name: (out / name).read_bytes() for name in _outputs(out)}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pictures, "write_preview", interrupted)
    assert _run(paths[0], "-k", 2, "-o", out, "--force") == 130
    # no file replaced, none half-written
    assert {name: (out / name).read_bytes() for name in _outputs(out)} == before


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"skdgmm {skdgmm.__version__}"


@pytest.mark.parametrize("verbose", [False, True])
def test_verbose_is_passed_to_the_estimator(pngs, tmp_path, monkeypatch, verbose):
    seen, fit_predict = [], DeepGaussianMixture.fit_predict

    def recording(self, *args, **kwargs):
        seen.append(self.verbose)
        return fit_predict(self, *args, **kwargs)

    monkeypatch.setattr(DeepGaussianMixture, "fit_predict", recording)
    paths, _ = pngs
    _run(paths[0], "-k", 2, "-o", tmp_path / "out", *["--verbose"] * verbose)
    assert seen == [int(verbose)]


@pytest.fixture
def small_demo(monkeypatch):
    """The demo on 3 + 1 images of 24x24 and a short training, to keep it fast."""
    import functools

    from skdgmm.cli import demo

    monkeypatch.setattr(demo, "N_IMAGES", 3)
    monkeypatch.setattr(demo, "N_NEW", 1)
    monkeypatch.setattr(demo, "SHAPE", (24, 24))
    short = functools.partial(DeepGaussianMixture, max_iter=3)
    monkeypatch.setattr(skdgmm, "DeepGaussianMixture", short)


def test_demo_compares_three_methods_and_writes_a_picture(
    small_demo, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    table = {line.split("  ")[0]: line for line in out.splitlines()}
    for method in [
        "GaussianMixture",
        "GaussianMixture, smoothed (sigma=2 px)",
        "DeepGaussianMixture",
    ]:
        # a mean Dice and the seconds on the method's row
        dice, seconds = map(float, table[method].split()[-2:])
        assert 0 <= dice <= 1 and seconds >= 0
    text = " ".join(out.split())  # the sentences are wrapped
    assert "1 new images, labelled by the fitted network in one forward" in text
    assert "the same class numbers in every image without re-matching" in text
    # by default the picture goes to the current directory: the images, their
    # classes and the three methods, one row each, 2 pixels apart
    picture = imread(tmp_path / "skdgmm_demo.png")
    assert picture.shape == (5 * 24 + 4 * 2, 3 * 24 + 2 * 2, 3)
    assert "skdgmm_demo.png" in out


def test_demo_writes_labels_and_a_preview(small_demo, tmp_path, capsys):
    picture = tmp_path / "comparison.png"
    argv = ["demo", "--device", "cpu", "--picture", str(picture)]
    assert main([*argv, "-o", str(tmp_path / "demo.png")]) == 0
    assert picture.exists()
    labels = imread(tmp_path / "demo.png")
    # one encoding with `segment`: component k as k; the 3 images side by side
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    assert labels.shape == (24, 3 * 24)
    preview = imread(tmp_path / "demo_preview.png")
    assert (preview[labels == 1] == COLOURS[1][1]).all()
    assert "demo_preview.png" in capsys.readouterr().out


@pytest.mark.parametrize(
    "smoothed, deep, says",
    [
        (0.93, 0.90, "smoothed posteriors is better here"),
        (0.93, 0.935, "smoothed posteriors is as good here"),
        (0.90, 0.95, "the deep model is ahead"),
    ],
)
def test_demo_conclusion_follows_its_figures(smoothed, deep, says):
    from skdgmm.cli.demo import _verdict

    verdict = _verdict(smoothed, deep, speedup=50)
    assert says in verdict and "50x faster" in verdict
    assert "new images labelled in one forward pass" in verdict


def _imagej(path, data, axes):
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": axes})


def _segmentable(shape, n_channels=1, random_state=0):
    """An image or volume of ``shape`` (spatial) with channels last."""
    images, _ = make_segmentation_images(
        1, shape, n_channels=n_channels, random_state=random_state
    )
    return images[0].astype(np.float32)


@pytest.mark.parametrize(
    "data, axes, shape",
    [
        # z-stack (a volume, by default trained as 3-D)
        (_segmentable((4, 16, 16)), "ZYX", (4, 16, 16)),
        # ImageJ channel-first image: 2 channels, not 2 rows
        (np.moveaxis(_segmentable((16, 12), 2), -1, 0), "CYX", (16, 12)),
        # a volume with channels
        (np.moveaxis(_segmentable((4, 16, 12), 2), -1, 1), "ZCYX", (4, 16, 12)),
    ],
)
def test_imagej_tiff_axes_choose_the_layout(tmp_path, capsys, data, axes, shape):
    _imagej(tmp_path / "stack.tif", data, axes)
    assert _run(tmp_path / "stack.tif", "-k", 2, "-o", tmp_path) == 0
    with tifffile.TiffFile(tmp_path / "stack_labels.tif") as written:
        labels = written.series[0].asarray()
        assert written.series[0].axes == "YX" if len(shape) == 2 else "ZYX"
    assert labels.shape == shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1}
    if len(shape) == 3:
        printed = capsys.readouterr().out
        assert "shape (4, 16, " in printed  # one volume, not a 2-D image
        assert "stack_preview_axis0_slice2.png" in printed


def test_many_channels_from_the_file_axes_give_no_layout_warning(tmp_path, capsys):
    # 20 channels on a 12 x 16 image: implausible for an array, not for a file
    data = np.moveaxis(_segmentable((12, 16), 20), -1, 0)
    _imagej(tmp_path / "bands.tif", data, "CYX")
    assert _run(tmp_path / "bands.tif", "-k", 2, "-o", tmp_path) == 0
    assert "channel_axis" not in capsys.readouterr().err
    assert tifffile.imread(tmp_path / "bands_labels.tif").shape == (12, 16)


def test_z_stack_as_2d_slices(tmp_path, capsys):
    volume = _segmentable((5, 16, 16))
    _imagej(tmp_path / "stack.tif", volume, "ZYX")
    mask = np.ones(volume.shape, dtype=np.uint8)
    mask[:, :2] = 0
    _imagej(tmp_path / "mask.tif", mask, "ZYX")
    options = ["--spatial-dims", 2, "--mask", tmp_path / "mask.tif", "--overlay"]
    assert _run(tmp_path / "stack.tif", "-k", 2, "-o", tmp_path / "out", *options) == 0
    printed = capsys.readouterr().out
    assert "read as a stack of 5 2-D slices along Z" in printed
    assert "on 5 2-D slices (from 1 file(s)) of shape (16, 16)" in printed
    labels = tifffile.imread(tmp_path / "out" / "stack_labels.tif")
    assert labels.shape == (5, 16, 16)
    assert (labels[:, :2] == 255).all() and (labels[:, 2:] < 2).all()
    # the middle one of the slices trained on
    overlay = imread(tmp_path / "out" / "stack_overlay_axis0_slice2.png")
    assert overlay.shape == (16, 16, 3)


def test_tiff_without_axes(tmp_path, capsys):
    # a plain multi-page TIFF: its pages are the slices of a volume
    pages = _segmentable((6, 16, 16))
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="minisblack")
    _run(tmp_path / "pages.tif", "-k", 2, "-o", tmp_path)
    assert "read its 6 pages as the Z slices" in capsys.readouterr().out
    assert tifffile.imread(tmp_path / "pages_labels.tif").shape == (6, 16, 16)


def test_rgb_tiff_is_one_image_with_channels(tmp_path):
    rgb = (np.clip(_segmentable((16, 16), 3), 0, 1) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    _run(tmp_path / "rgb.tif", "-k", 2, "-o", tmp_path)
    assert tifffile.imread(tmp_path / "rgb_labels.tif").shape == (16, 16)


def test_layouts_that_cannot_be_honoured_are_refused(pngs, tmp_path, capsys):
    paths, _ = pngs
    frames = np.zeros((3, 32, 32), dtype=np.uint8)
    out = tmp_path / "out"
    _imagej(tmp_path / "movie.tif", frames, "TYX")
    err = _usage_error(capsys, tmp_path / "movie.tif", "-k", 2, "-o", out)
    assert "axes TYX" in err and "T (time)" in err and "one file per T" in err
    _imagej(tmp_path / "stack.tif", frames, "ZYX")
    err = _usage_error(capsys, paths[0], tmp_path / "stack.tif", "-k", 2, "-o", out)
    assert "mix 2-D images and volumes" in err
    assert "pass --spatial-dims 2" in err
    odd = np.zeros((2, 3, 8, 8), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "odd.tif", odd, photometric="minisblack")
    err = _usage_error(capsys, tmp_path / "odd.tif", "-k", 2, "-o", out)
    assert "cannot tell the axes of this TIFF" in err and "imagej=True" in err
    assert not out.exists()
    # with --spatial-dims 2 the image and the z-stack's slices train together
    both = [paths[0], tmp_path / "stack.tif"]
    assert _run(*both, "-k", 2, "-o", out, "--spatial-dims", 2) == 0
    assert tifffile.imread(out / "stack_labels.tif").shape == (3, 32, 32)


def test_nifti_as_2d_slices_and_4d_channels(tmp_path, capsys):
    nibabel = pytest.importorskip("nibabel")
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    volume = _segmentable((12, 16, 6))
    nibabel.save(nibabel.Nifti1Image(volume, affine), tmp_path / "scan.nii.gz")
    _run(tmp_path / "scan.nii.gz", "-k", 2, "-o", tmp_path / "a", "--spatial-dims", 2)
    printed = capsys.readouterr().out
    # 6 slices of 12x16 along the last axis, not a 16-channel 2-D image
    assert "6 2-D slices (from 1 file(s)) of shape (12, 16)" in printed
    written = nibabel.load(tmp_path / "a" / "scan_labels.nii.gz")
    assert written.shape == (12, 16, 6)
    np.testing.assert_allclose(written.affine, affine)
    assert (tmp_path / "a" / "scan_preview_axis2_slice3.png").exists()

    channels = _segmentable((12, 16, 6), n_channels=2)  # the 4th axis
    nibabel.save(nibabel.Nifti1Image(channels, affine), tmp_path / "two.nii.gz")
    for spatial_dims in ([], ["--spatial-dims", 2]):
        out = tmp_path / "b"
        _run(tmp_path / "two.nii.gz", "-k", 2, "-o", out, "--force", *spatial_dims)
        assert nibabel.load(tmp_path / "b" / "two_labels.nii.gz").shape == (12, 16, 6)
    assert "of shape (12, 16, 2)" in capsys.readouterr().out  # 2-D slices, 2 channels


@pytest.mark.parametrize("flip", [False, True])
def test_label_maps_name_the_classes_of_every_image(pngs, tmp_path, capsys, flip):
    """Class k of every label map written is class k of ``--labels``: the
    prior's class numbers, flipped or not, come out in the other image."""
    paths, truth = pngs
    named = 1 - truth if flip else truth
    prior = named[0].astype(np.uint8)
    prior[::2] = 255  # half the rows unlabelled
    imsave(tmp_path / "prior.png", prior, check_contrast=False)
    out = tmp_path / "out"
    assert _run(*paths, "-k", 2, "-o", out, "--labels", tmp_path / "prior.png") == 0
    assert "class k is their class k" in capsys.readouterr().out
    for i in range(2):
        written = imread(out / f"image{i}_labels.png")
        assert (written == named[i]).mean() > 0.95  # no matching


@pytest.mark.parametrize(
    "labels, message",
    [
        ([[7, 1]], "classes 0 .. 1 (K is -k) and 255 for unlabelled pixels; found [7]"),
        ([[0, 255]], "Classes [1] have no labelled pixel"),
        ([[0, 1]] * 3, "3 label maps for 2 images"),
    ],
)
def test_label_map_errors(pngs, tmp_path, capsys, labels, message):
    paths, _ = pngs
    files = []
    for i, values in enumerate(labels):
        files.append(tmp_path / f"prior{i}.png")
        prior = np.resize(np.array(values, dtype=np.uint8), (32, 32))
        imsave(files[-1], prior, check_contrast=False)
    err = _usage_error(
        capsys, *paths, "-k", 2, "-o", tmp_path / "out", "--labels", *files
    )
    assert message in err
    assert not (tmp_path / "out").exists()


def test_a_label_map_of_another_shape_is_refused(pngs, tmp_path, capsys):
    paths, _ = pngs
    imsave(tmp_path / "prior.png", np.zeros((8, 8), np.uint8), check_contrast=False)
    err = _usage_error(
        capsys,
        *paths,
        "-k",
        2,
        "-o",
        tmp_path / "out",
        "--labels",
        tmp_path / "prior.png",
    )
    assert "a label map of shape (8, 8) for an image of shape (32, 32)" in err


def test_label_maps_as_tiff_floats_and_their_errors(pngs, tmp_path, capsys):
    """NIfTI and TIFF label maps are often floats: whole numbers are read as
    classes, negative values are named."""
    paths, truth = pngs
    prior = tmp_path / "prior.tif"
    tifffile.imwrite(prior, truth[0].astype(np.float32))
    out = tmp_path / "out"
    assert _run(*paths, "-k", 2, "-o", out, "--labels", prior) == 0
    written = imread(out / "image1_labels.png")
    assert (written == truth[1]).mean() > 0.95
    for values, message in [
        (truth[0] - 1.0, "found [-1]"),
        (truth[0] + 0.5, "a label map holds whole numbers"),
    ]:
        tifffile.imwrite(prior, values.astype(np.float32))
        err = _usage_error(
            capsys, *paths, "-k", 2, "-o", tmp_path / "o2", "--labels", prior
        )
        assert message in err
