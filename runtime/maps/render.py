"""The one map pipeline: graph outputs -> each class's map per method -> the original pixel
grid -> colour. `explain`, the DICOM node, `bench` and `evaluate` all render through it, so
what a report shows, what the node sends and what the benchmark times are the same maps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..inputs.preprocess import Geometry
from .colour import overlay
from .methods import GraphMethod


@dataclass(frozen=True)
class ClassMap:
    """One method's map for one explained class of one image."""

    rank: int  # 1-based position among the image's explained classes
    target: int  # class index
    method: GraphMethod
    native: np.ndarray  # at the method's own resolution (a CAM's layer, LRP's network input)
    geometry: Geometry  # where the network input lies on the original radiograph

    @property
    def heat(self) -> np.ndarray:
        """The map on the original radiograph's pixel grid (crop and resize undone), made when
        asked: on a large radiograph each is hundreds of megabytes, so none is kept."""
        return self.geometry.to_original(self.native)

    def overlay(self, gray01: np.ndarray, opacity: float, max_side: int | None = None) -> np.ndarray:
        """The map blended onto the radiograph, BGR uint8; with ``max_side``, drawn directly at
        the size that fits it (area-scaled radiograph, map mapped onto that grid), never at full size."""
        height, width = gray01.shape
        scale = 1.0 if max_side is None else min(1.0, max_side / max(height, width))
        if scale >= 1.0:
            return overlay(gray01, self.heat, self.method.signed, opacity)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(gray01, size, interpolation=cv2.INTER_AREA)
        return overlay(small, self.geometry.scaled(size[1], size[0]).to_original(self.native), self.method.signed,
                       opacity)


def class_maps(outputs: Mapping[str, np.ndarray], geometry: Geometry, methods: Sequence[GraphMethod],
               targets: Sequence[int], index: int = 0) -> list[ClassMap]:
    """Image ``index``'s maps, class by class (in ``targets`` order), each method in turn;
    ``targets`` are the class indices of the graph's class axis (a prefix of it keeps fewer)."""
    native = [method.maps(outputs)[index] for method in methods]  # each [K, h, w], computed once
    return [ClassMap(rank, int(target), method, maps[rank - 1], geometry)
            for rank, target in enumerate(targets, 1) for method, maps in zip(methods, native)]


def at_input_grid(native: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map on the network input's (height, width) grid: a CAM upsampled bilinearly, LRP's
    map unchanged; where evaluation compares and perturbs maps."""
    return cv2.resize(native.astype(np.float32), size[::-1], interpolation=cv2.INTER_LINEAR)


def explained_targets(outputs: Mapping[str, np.ndarray], keep: int | None = None, index: int = 0) -> list[int]:
    """The class indices image ``index`` was explained for, the first ``keep`` of them."""
    return [int(t) for t in outputs["targets"][index][:keep]]
