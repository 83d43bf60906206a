"""PNG pictures of label maps: a colour preview and an overlay on the image.

A label map stores component k as k, which viewers show almost black; the
preview gives each component a fixed colour (the same in every image and
slice). A volume is shown by one slice, named in the file name.
"""

import numpy as np

from ..plotting import overlay_rgb
from .io import OUTSIDE

# distinct colours (Sasha Trubetskoy's list), component k gets COLOURS[k % 10]
COLOURS = (
    ("red", (230, 25, 75)),
    ("green", (60, 180, 75)),
    ("yellow", (255, 225, 25)),
    ("blue", (0, 130, 200)),
    ("orange", (245, 130, 48)),
    ("purple", (145, 30, 180)),
    ("cyan", (70, 240, 240)),
    ("magenta", (240, 50, 230)),
    ("lime", (210, 245, 60)),
    ("pink", (250, 190, 212)),
)


def legend(n_components):
    """The colours of the preview, in words."""
    names = ", ".join(
        f"{k} {COLOURS[k % len(COLOURS)][0]}" for k in range(n_components)
    )
    return f"preview colours: {names}; black outside the mask"


def preview_rgb(labels):
    """uint8 RGB of a 2-D uint8 label map: COLOURS, black for OUTSIDE."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:OUTSIDE] = [COLOURS[k % len(COLOURS)][1] for k in range(OUTSIDE)]
    return palette[labels]


def shown_slice(arranged):
    """``(axis, index)`` of the label map's slice that pictures of a volume
    show, or None for a 2-D image: the middle of the slices it was cut into,
    else the middle slice across the shortest axis (the slice direction of
    most scans)."""
    shape = arranged.spatial_shape
    if len(shape) == 2:
        return None
    axis = arranged.slice_axis
    if axis is None:
        axis = int(np.argmin(shape))
    return axis, shape[axis] // 2


def picture_suffix(where):
    """What a picture's file name says of the slice it shows."""
    return "" if where is None else f"_axis{where[0]}_slice{where[1]}"


def _take(array, where):
    return array if where is None else np.take(array, where[1], axis=where[0])


def write_preview(path, labels, where=None):
    """The preview PNG of a uint8 label map (of the slice ``where``)."""
    from skimage.io import imsave

    imsave(path, preview_rgb(_take(labels, where)), check_contrast=False)


def write_overlay(path, image, labels, where):
    """The overlay PNG of integer labels (-1 uncoloured) over an image in the
    file's layout (of the slice ``where``)."""
    from skimage.io import imsave

    picture = overlay_rgb(_take(image, where), _take(labels, where))
    imsave(path, (picture * 255).round().astype(np.uint8), check_contrast=False)


def write_grid(path, rows, gap=2):
    """A PNG of uint8 RGB tiles of one shape, in ``rows`` (lists of tiles of
    equal length), with white lines of ``gap`` pixels between them."""
    from skimage.io import imsave

    height, width, _ = rows[0][0].shape
    n_rows, n_cols = len(rows), len(rows[0])
    grid = np.full(
        (n_rows * (height + gap) - gap, n_cols * (width + gap) - gap, 3),
        255,
        dtype=np.uint8,
    )
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            top, left = i * (height + gap), j * (width + gap)
            grid[top : top + height, left : left + width] = tile
    imsave(path, grid, check_contrast=False)
