"""Synthetic frontal chest radiographs with a ground-truth mask per finding, in CheXpert's layout.

A phantom is drawn on a density canvas (bright = dense, as a radiograph shows it): body
outline and shoulders, lungs with vessel markings, mediastinum and spine, heart, diaphragm
domes, ribs and clavicles; then the findings, each with its mask; then exposure (gamma,
contrast), detector blur and quantum noise. Image left is the patient's right, so the heart
lies to the image's right. Every random choice comes from a stream keyed by (seed, index,
purpose), so a phantom is the same whatever else is drawn, and a finding can be added or
left out without changing the rest of the image. numpy and OpenCV only.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError
from ..runtime.manifest import CHEXPERT_CLASSES, slug

# Per-image probability of each finding drawn independently (Consolidation and Pneumonia
# are drawn as kinds of Lung Opacity; No Finding follows from the rest).
PREVALENCE: dict[str, float] = {
    "Enlarged Cardiomediastinum": 0.10,
    "Cardiomegaly": 0.15,
    "Lung Opacity": 0.25,
    "Lung Lesion": 0.08,
    "Edema": 0.12,
    "Atelectasis": 0.15,
    "Pneumothorax": 0.10,
    "Pleural Effusion": 0.20,
    "Pleural Other": 0.05,
    "Fracture": 0.06,
    "Support Devices": 0.30,
}
OPACITY_KINDS = {"Consolidation": 0.5, "Pneumonia": 0.4}
CSV_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CLASSES)

AIR, TISSUE, LUNG, MEDIASTINUM, HEART, BONE = 0.04, 0.42, 0.14, 0.58, 0.62, 0.12


def _soft(layer: np.ndarray, sigma: float) -> np.ndarray:
    """A layer with its edges softened (anatomy has no pixel-sharp borders)."""
    return cv2.GaussianBlur(layer.astype(np.float32), (0, 0), max(sigma, 0.5))


@dataclass
class Phantom:
    """One synthetic radiograph: 8-bit pixels, CheXpert labels and a boolean mask per finding."""

    image: np.ndarray
    labels: dict[str, float]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    sex: str = "Female"
    age: int = 50

    @property
    def findings(self) -> list[str]:
        return [name for name, value in self.labels.items() if value == 1.0 and name != "No Finding"]


@dataclass
class Anatomy:
    """Where the organs of one phantom lie, in pixels."""

    size: int
    lungs: np.ndarray  # bool, both lungs above the diaphragm
    right_lung: np.ndarray
    left_lung: np.ndarray
    heart_center: tuple[float, float]
    heart_axes: tuple[float, float]
    mediastinum: np.ndarray  # bool
    hila: tuple[tuple[float, float], tuple[float, float]]
    ribs: list[np.ndarray]  # polylines


class PhantomGenerator:
    """Deterministic phantoms: ``make(index)`` depends only on (seed, index, size)."""

    def __init__(self, size: int = 1024, seed: int = 0) -> None:
        if size < 64:
            raise ConfigError("phantoms are at least 64 pixels wide")
        if seed < 0:
            raise ConfigError("the seed is a non-negative integer")
        self.size, self.seed = size, seed

    def _rng(self, index: int, purpose: str) -> np.random.Generator:
        key = [self.seed, index, *purpose.encode()]
        return np.random.default_rng(key)

    def choose_findings(self, index: int) -> list[str]:
        rng = self._rng(index, "findings")
        chosen = [name for name, p in PREVALENCE.items() if rng.random() < p]
        if "Lung Opacity" in chosen:
            chosen += [kind for kind, p in OPACITY_KINDS.items() if rng.random() < p]
        return chosen

    def make(self, index: int, findings: Iterable[str] | None = None) -> Phantom:
        """Phantom ``index``; ``findings`` overrides the drawn set (Consolidation and Pneumonia
        imply Lung Opacity)."""
        chosen = set(self.choose_findings(index) if findings is None else findings)
        unknown = chosen - set(PREVALENCE) - set(OPACITY_KINDS)
        if unknown:
            raise ConfigError(f"not a phantom finding: {', '.join(sorted(unknown))}")
        if chosen & set(OPACITY_KINDS):
            chosen.add("Lung Opacity")
        rng = self._rng(index, "anatomy")
        canvas, anatomy = self._anatomy(rng, cardiomegaly="Cardiomegaly" in chosen,
                                        wide_mediastinum="Enlarged Cardiomediastinum" in chosen)
        masks: dict[str, np.ndarray] = {}
        for name in [n for n in PREVALENCE if n in chosen]:
            masks[name] = DRAW[name](canvas, anatomy, self._rng(index, name))
        for kind in OPACITY_KINDS:
            if kind in chosen:
                masks[kind] = masks["Lung Opacity"].copy()
        image = self._expose(canvas, self._rng(index, "exposure"))
        labels = {name: float(name in chosen) for name in CHEXPERT_CLASSES}
        labels["No Finding"] = float(not (chosen - {"Support Devices"}))
        sex_age = self._rng(index, "patient")
        return Phantom(image, labels, {k: v for k, v in masks.items() if v.any()},
                       sex=str(sex_age.choice(["Female", "Male"])), age=int(sex_age.integers(18, 90)))

    # ---- anatomy ---------------------------------------------------------------------------

    def _anatomy(self, rng: np.random.Generator, cardiomegaly: bool, wide_mediastinum: bool) -> tuple[np.ndarray, Anatomy]:
        s = self.size

        def jitter(scale: float) -> float:
            return 1 + rng.uniform(-scale, scale)

        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        canvas = np.full((s, s), AIR, np.float32)
        cx = s * (0.5 + rng.uniform(-0.02, 0.02))
        body = np.zeros((s, s), np.float32)
        cv2.ellipse(body, (int(cx), int(s * 0.62)), (int(s * 0.43 * jitter(0.05)), int(s * 0.55)), 0, 0, 360, 1.0, -1)
        for side in (-1, 1):  # shoulders
            cv2.ellipse(body, (int(cx + side * s * 0.33), int(s * 0.2)), (int(s * 0.17), int(s * 0.1)), 0, 0, 360, 1.0, -1)
        canvas += (TISSUE - AIR) * _soft(body, s * 0.006)
        # lungs: ellipses above the diaphragm domes (the right dome a little higher)
        dome_y = s * (0.72 + rng.uniform(-0.03, 0.03))
        lungs, dome_curves = [], []
        for side, x_off, lift in ((-1, 0.17, 0.015), (1, 0.16, 0.0)):
            lung = np.zeros((s, s), np.uint8)
            center = (int(cx + side * s * x_off * jitter(0.06)), int(s * 0.47))
            cv2.ellipse(lung, center, (int(s * 0.125 * jitter(0.08)), int(s * 0.27 * jitter(0.05))), side * 4, 0, 360, 1, -1)
            dome = dome_y - lift * s - s * 0.06 * np.exp(-(((xx - center[0]) / (s * 0.1)) ** 2))
            lungs.append(lung.astype(bool) & (yy < dome))
            dome_curves.append(dome)
        domes = yy >= np.minimum(*dome_curves)
        right, left = lungs
        both = right | left
        canvas -= (TISSUE - LUNG) * _soft(both.astype(np.float32), s * 0.004)
        # vessel markings fanning out from the hila, fading towards the periphery
        hila = ((cx - s * 0.07, s * 0.45), (cx + s * 0.07, s * 0.46))
        markings = np.zeros((s, s), np.float32)
        for hx, hy in hila:
            side = -1 if hx < cx else 1
            for _ in range(16):
                angle = rng.uniform(-1.3, 1.3) + (np.pi if side < 0 else 0)
                length = s * rng.uniform(0.12, 0.26)
                points = [(hx, hy)]
                for step in range(1, 6):
                    bend = rng.uniform(-0.15, 0.15)
                    points.append((hx + np.cos(angle + bend) * length * step / 5, hy + np.sin(angle + bend) * length * step / 5))
                cv2.polylines(markings, [np.int32(points)], False, 0.06, max(1, s // 300))
        fade = np.exp(-(((xx - cx) / (s * 0.3)) ** 2))
        canvas += _soft(markings, s / 700) * both * fade
        # mediastinum (tapered towards the neck) and spine
        half_width = s * 0.065 * (1.8 if wide_mediastinum else 1.0) * jitter(0.08)
        mediastinum = np.zeros((s, s), np.float32)
        top, bottom = s * 0.12, s * 0.58
        outline = [(cx - half_width * 0.7, top), (cx + half_width * 0.7, top), (cx + half_width, bottom), (cx - half_width, bottom)]
        cv2.fillPoly(mediastinum, [np.int32(outline)], 1.0)
        canvas = np.maximum(canvas, MEDIASTINUM * _soft(mediastinum, s * 0.006))
        canvas += 0.06 * _soft(((np.abs(xx - cx) < s * 0.03) & (body > 0)).astype(np.float32), s * 0.004)
        # heart: to the patient's left (image right)
        scale = (1.45 if cardiomegaly else 1.0) * jitter(0.06)
        heart_center = (cx + s * 0.045 * scale, s * 0.62)
        heart_axes = (s * 0.115 * scale, s * 0.095 * scale ** 0.5)
        heart = np.zeros((s, s), np.float32)
        cv2.ellipse(heart, (int(heart_center[0]), int(heart_center[1])), (int(heart_axes[0]), int(heart_axes[1])), -15, 0, 360, 1.0, -1)
        canvas = np.maximum(canvas, HEART * _soft(heart, s * 0.005))
        # below the domes: the abdomen
        canvas = np.maximum(canvas, 0.5 * _soft((domes & (body > 0)).astype(np.float32), s * 0.006))
        # posterior ribs: from the spine they rise a little, then sweep down and out; clavicles
        ribs = []
        for side in (-1, 1):
            for k in range(10):
                y0 = s * (0.17 + 0.056 * k) * jitter(0.01)
                t = np.linspace(0, 1, 24)
                curve = np.stack([cx + side * (s * 0.03 + t * s * 0.36), y0 - s * 0.03 * np.sin(t * np.pi * 0.8) + s * 0.12 * t ** 2], 1)
                ribs.append(curve)
        rib_layer = np.zeros((s, s), np.float32)
        for curve in ribs:
            cv2.polylines(rib_layer, [np.int32(curve)], False, BONE, max(2, s // 70))
        for side in (-1, 1):
            start, end = (cx + side * s * 0.04, s * 0.17), (cx + side * s * 0.3, s * 0.12)
            cv2.line(rib_layer, (int(start[0]), int(start[1])), (int(end[0]), int(end[1])), BONE * 1.4, max(3, s // 60))
        canvas += _soft(rib_layer, s / 500) * (body > 0)
        return canvas, Anatomy(s, both, right, left, heart_center, heart_axes, mediastinum > 0.5, hila, ribs)

    def _expose(self, canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        s = self.size
        image = cv2.GaussianBlur(canvas, (0, 0), max(0.6, s / 900))
        image = np.clip(image, 0, 1) ** rng.uniform(0.8, 1.25)
        image = image * rng.uniform(0.85, 1.1) + rng.uniform(-0.03, 0.05)
        image += rng.normal(0, 0.018, image.shape).astype(np.float32)
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


# ---- findings: each draws on the canvas and returns its mask ---------------------------------

def _blob_field(rng: np.random.Generator, size: int, region: np.ndarray, count: int, radius: float) -> np.ndarray:
    """A smooth random field of ``count`` Gaussian blobs centred inside ``region``."""
    ys, xs = np.nonzero(region)
    field_ = np.zeros((size, size), np.float32)
    if len(ys) == 0:
        return field_
    for _ in range(count):
        i = rng.integers(len(ys))
        cv2.circle(field_, (int(xs[i]), int(ys[i])), int(radius * rng.uniform(0.6, 1.3)), 1.0, -1)
    return cv2.GaussianBlur(field_, (0, 0), radius * 0.5)


def _side(rng: np.random.Generator, anatomy: Anatomy) -> np.ndarray:
    return anatomy.right_lung if rng.random() < 0.5 else anatomy.left_lung


def draw_enlarged_cardiomediastinum(canvas: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    return anatomy.mediastinum.copy()  # drawn with the anatomy (the widened mediastinum)


def draw_cardiomegaly(canvas: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(canvas.shape, np.uint8)
    (x, y), (a, b) = anatomy.heart_center, anatomy.heart_axes
    cv2.ellipse(mask, (int(x), int(y)), (int(a), int(b)), -15, 0, 360, 1, -1)
    return mask.astype(bool)  # drawn with the anatomy (the enlarged heart)


def draw_lung_opacity(canvas: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    lung = _side(rng, anatomy)
    lower = lung & (np.arange(anatomy.size)[:, None] > anatomy.size * rng.uniform(0.35, 0.55))
    field_ = _blob_field(rng, anatomy.size, lower if lower.any() else lung, 6, anatomy.size * 0.04)
    patch = (field_ > 0.35) & lung
    canvas += np.where(lung, np.clip(field_, 0, 1) * 0.3, 0).astype(np.float32)
    return patch


def draw_lung_lesion(canvas: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    lung = _side(rng, anatomy)
    inner = cv2.erode(lung.astype(np.uint8), np.ones((anatomy.size // 16,) * 2, np.uint8)).astype(bool)
    ys, xs = np.nonzero(inner if inner.any() else lung)
    i = rng.integers(len(ys))
    radius = int(anatomy.size * rng.uniform(0.015, 0.04))
    mask = np.zeros(canvas.shape, np.uint8)
    cv2.circle(mask, (int(xs[i]), int(ys[i])), radius, 1, -1)
    canvas += cv2.GaussianBlur(mask.astype(np.float32), (0, 0), radius * 0.25) * 0.32
    return mask.astype(bool)


def draw_edema(canvas: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    s = anatomy.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    haze = np.zeros((s, s), np.float32)
    for hx, hy in anatomy.hila:
        haze += np.exp(-(((xx - hx) / (s * 0.12)) ** 2 + ((yy - hy) / (s * 0.14)) ** 2))
    haze = np.clip(haze, 0, 1) * anatomy.lungs
    canvas += _soft(haze, s * 0.01) * rng.uniform(0.13, 0.19)
    return haze > 0.3


def draw_atelectasis(canvas: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    s = anatomy.size
    lung = _side(rng, anatomy)
    ys, xs = np.nonzero(lung)
    y = int(np.percentile(ys, rng.uniform(65, 85)))
    x0, x1 = int(xs.min()), int(xs.max())
    band = np.zeros((s, s), np.uint8)
    cv2.line(band, (x0, y + int(rng.uniform(-0.03, 0.03) * s)), (x1, y), 1, max(3, int(s * 0.025)))
    mask = band.astype(bool) & lung
    canvas += cv2.GaussianBlur(mask.astype(np.float32), (0, 0), s * 0.004) * 0.28
    return mask


def draw_pneumothorax(canvas: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    s = anatomy.size
    lung = _side(rng, anatomy)
    collapsed = cv2.erode(lung.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(s * 0.07),) * 2))
    top = np.arange(s)[:, None] < np.percentile(np.nonzero(lung)[0], rng.uniform(45, 70))
    rim = lung & ~collapsed.astype(bool) & top
    canvas[rim] = LUNG * 0.55  # lucent, no lung markings
    edge = cv2.morphologyEx(collapsed, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool) & top & lung
    canvas[edge] += 0.12  # the visceral pleural line
    return rim


def draw_pleural_effusion(canvas: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    s = anatomy.size
    lung = _side(rng, anatomy)
    ys, xs = np.nonzero(lung)
    level = np.percentile(ys, rng.uniform(70, 88))
    yy, xx = np.mgrid[0:s, 0:s]
    lateral = xs.min() if xs.mean() < s / 2 else xs.max()
    meniscus = level - s * 0.06 * (1 - np.abs(xx - lateral) / max(np.ptp(xs), 1))  # climbs the lateral wall
    fluid = lung & (yy > meniscus)
    canvas += np.clip(0.5 - canvas, 0, None) * _soft(fluid, s * 0.004)  # water density, obscuring what lies behind
    return fluid


def draw_pleural_other(canvas: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    s = anatomy.size
    lung = _side(rng, anatomy)
    ys, xs = np.nonzero(lung)
    lateral = xs < np.percentile(xs, 12) if xs.mean() < s / 2 else xs > np.percentile(xs, 88)
    band = np.zeros((s, s), bool)
    band[ys[lateral], xs[lateral]] = True
    band &= np.arange(s)[:, None] < np.percentile(ys, rng.uniform(55, 80))
    canvas[band] += 0.2
    return band


def draw_fracture(canvas: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    s = anatomy.size
    rib = anatomy.ribs[rng.integers(2, len(anatomy.ribs) // 2) + (len(anatomy.ribs) // 2 if rng.random() < 0.5 else 0)]
    point = rib[rng.integers(8, 18)]
    gap = max(3, s // 100)
    mask = np.zeros((s, s), np.uint8)
    cv2.circle(mask, (int(point[0]), int(point[1])), gap + max(2, s // 80), 1, -1)
    region = mask.astype(bool)
    canvas[region] -= 0.14  # the break: the cortex interrupted
    shifted = np.roll(canvas, gap // 2, axis=0)
    canvas[region] = np.maximum(canvas[region], shifted[region] - 0.1)
    return region


def draw_support_devices(canvas: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    s = anatomy.size
    cx = float(np.nonzero(anatomy.mediastinum)[1].mean())
    layer = np.zeros((s, s), np.uint8)
    width = max(2, s // 180)
    if rng.random() < 0.6:  # endotracheal tube / central line down the mediastinum
        points = [(cx + rng.uniform(-0.02, 0.02) * s, 0.0), (cx, s * 0.2), (cx + rng.uniform(-0.03, 0.05) * s, s * rng.uniform(0.3, 0.45))]
        cv2.polylines(layer, [np.int32(points)], False, 1, width)
    else:  # pacemaker below the left clavicle, lead to the heart
        box = (int(cx + s * 0.22), int(s * 0.2))
        cv2.rectangle(layer, box, (box[0] + s // 18, box[1] + s // 26), 1, -1)
        heart = anatomy.heart_center
        cv2.polylines(layer, [np.int32([box, (cx + s * 0.1, s * 0.35), (heart[0], heart[1])])], False, 1, width)
    mask = layer.astype(bool)
    canvas[mask] += 0.45
    return cv2.dilate(layer, np.ones((3, 3), np.uint8)).astype(bool)


DRAW: dict[str, Callable[[np.ndarray, Anatomy, np.random.Generator], np.ndarray]] = {
    "Enlarged Cardiomediastinum": draw_enlarged_cardiomediastinum,
    "Cardiomegaly": draw_cardiomegaly,
    "Lung Opacity": draw_lung_opacity,
    "Lung Lesion": draw_lung_lesion,
    "Edema": draw_edema,
    "Atelectasis": draw_atelectasis,
    "Pneumothorax": draw_pneumothorax,
    "Pleural Effusion": draw_pleural_effusion,
    "Pleural Other": draw_pleural_other,
    "Fracture": draw_fracture,
    "Support Devices": draw_support_devices,
}


def write_dataset(out: str | Path, count: int, seed: int = 0, size: int = 1024, valid_fraction: float = 0.1,
                  progress: Callable[[int], None] | None = None) -> tuple[Path, Path]:
    """Write ``count`` phantoms as a CheXpert-format dataset under ``out``: ``train.csv``,
    ``valid.csv``, PNGs under ``phantoms/{train,valid}/patientNNNNN/study1/view1_frontal.png``
    and one mask per finding under ``masks/`` at the same relative path. Returns the CSVs."""
    out = Path(out)
    generator = PhantomGenerator(size, seed)
    valid_count = int(round(count * valid_fraction))
    rows: dict[str, list[dict[str, str]]] = {"train": [], "valid": []}
    for index in range(count):
        split = "valid" if index >= count - valid_count else "train"
        phantom = generator.make(index)
        relative = Path("phantoms") / split / f"patient{index + 1:05d}" / "study1" / "view1_frontal.png"
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / relative), phantom.image)
        for name, mask in phantom.masks.items():
            mask_path = out / "masks" / relative.with_suffix("") / f"{slug(name)}.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(mask_path), mask.astype(np.uint8) * 255)
        row = {"Path": relative.as_posix(), "Sex": phantom.sex, "Age": str(phantom.age),
               "Frontal/Lateral": "Frontal", "AP/PA": "PA"}
        row.update({name: f"{value:.1f}" for name, value in phantom.labels.items()})
        rows[split].append(row)
        if progress:
            progress(index + 1)
    paths = []
    for split, entries in rows.items():
        path = out / f"{split}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(entries)
        paths.append(path)
    return paths[0], paths[1]
