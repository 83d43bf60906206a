import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imread, imsave

from skdgmm.__main__ import main
from skdgmm.datasets import make_segmentation_images
from skdgmm.metrics import match_labels

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
        "image1_labels.png",
        "image1_overlay.png",
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
    assert "wrote" in capsys.readouterr().out


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


def test_tiff_stays_tiff_with_float_intensities(tmp_path):
    images, _ = make_segmentation_images(1, (32, 32), n_channels=2, random_state=0)
    imsave(tmp_path / "cells.tif", images[0].astype(np.float32))
    _run(tmp_path / "cells.tif", "-k", 3, "-o", tmp_path)
    labels = imread(tmp_path / "cells_labels.tif")
    assert labels.shape == (32, 32) and labels.dtype == np.uint8
    assert labels.max() <= 2


def test_nifti_volume_keeps_the_affine(tmp_path):
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
    # the overlay shows the middle slice across the shortest axis
    assert imread(tmp_path / "scan_overlay.png").shape == (16, 16, 3)


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
