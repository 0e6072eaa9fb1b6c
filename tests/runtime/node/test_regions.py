"""The outline of a map's strongest evidence: the part holding the peak, closed, on the image,
in DICOM image coordinates (pixel centres at +0.5)."""

from __future__ import annotations

import cv2
import numpy as np

from chexplain.runtime.node.regions import Region

from helpers import inside


def two_blobs() -> np.ndarray:
    """A large plateau and a smaller, higher blob: the peak is in the smaller part."""
    heat = np.zeros((200, 300), np.float32)
    heat[20:120, 20:140] = 1.0  # 12,000 px
    yy, xx = np.mgrid[:200, :300]
    heat += 2.0 * np.exp(-((yy - 150) ** 2 + (xx - 240) ** 2) / (2 * 12.0**2))
    return heat


def test_the_outline_is_the_closed_border_of_the_part_with_the_peak():
    heat = two_blobs()
    region = Region.of("Edema", "gradcam", heat)
    assert region.peak == (150, 240) and region.mask[region.peak]
    outline = region.outline()
    assert outline.shape[1] == 2 and len(outline) >= 5 and np.array_equal(outline[0], outline[-1])
    assert inside(outline, 240.5, 150.5)  # the peak's pixel centre
    assert not inside(outline, 80.5, 70.5)  # the plateau is another part of the region
    # what it encloses is that part of the mask, to within the simplification's pixel
    filled = np.zeros(heat.shape, np.uint8)
    cv2.fillPoly(filled, [np.round(outline - 0.5).astype(np.int32)], 1)
    part = region.mask & (np.hypot(*np.mgrid[:200, :300] - np.array([150, 240])[:, None, None]) < 60)
    overlap = (filled.astype(bool) & part).sum() / part.sum()
    assert overlap > 0.9 and filled.sum() < 1.2 * part.sum()
    assert (outline >= 0).all() and (outline[:, 0] <= 300).all() and (outline[:, 1] <= 200).all()


def test_without_a_peak_the_largest_part_and_degenerate_regions_get_a_pixel_square():
    heat = two_blobs()
    largest = Region("Edema", "gradcam", heat > 0.5).outline()  # no peak given: the plateau (the larger part)
    assert inside(largest, 80.5, 70.5) and not inside(largest, 240.5, 150.5)
    assert np.array_equal(Region("Edema", "gradcam", heat > 0.5, (5, 5)).outline(), largest)  # a peak outside: the same
    single = np.zeros((10, 10), bool)
    single[3, 7] = True
    square = Region("Edema", "gradcam", single, (3, 7)).outline()
    assert np.array_equal(square, [[7, 3], [8, 3], [8, 4], [7, 4], [7, 3]])  # the pixel (row 3, column 7)
    assert Region("Edema", "gradcam", np.zeros((10, 10), bool)).outline() is None
    assert Region.of("Edema", "gradcam", -np.ones((10, 10), np.float32)).peak is None  # no positive evidence
