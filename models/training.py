"""`chexplain train`: DenseNet121 on CheXpert-format data (CheXpert itself, or phantoms).

Masked binary cross-entropy (labels the uncertainty policy leaves out do not count), AdamW
with a cosine schedule stepped per batch, mixed precision on a GPU, radiograph-safe
augmentation (small rotation, scale and shift; no horizontal flip: the heart is on one
side), a checkpoint after every epoch that ``--resume`` continues from, per-class AUROC on
the validation CSV after each epoch, and per-class thresholds by Youden's J recorded in the
manifest. Under ``torchrun`` it trains with DistributedDataParallel unchanged.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import ConfigError, InputError
from ..runtime.evaluation.chexpert_csv import LabelTable, read_labels
from ..runtime.evaluation.metrics import auroc, per_class, youden_threshold
from ..runtime.inputs.preprocess import preprocess
from ..runtime.inputs.reader import read_radiograph
from ..runtime.manifest import CHEXPERT_CLASSES, Manifest, Preprocessing, Weights
from .architectures import build
from .checkpoints import load_checkpoint, save_checkpoint

STATE_NAME = "last.pt"
MODEL_NAME = "model.pt"


@dataclass
class TrainConfig:
    data: Path
    train_csv: Path
    valid_csv: Path
    out: Path
    uncertainty: str = "u-ones"
    image_size: int = 224
    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-5
    workers: int = 2
    seed: int = 0
    frontal_only: bool = True
    augment: bool = True
    init: Path | None = None
    name: str = "densenet121-trained"
    resume: bool = False
    architecture: str = "densenet121"

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    valid_loss: float
    auroc: dict[str, float | None]
    mean_auroc: float | None
    seconds: float


@dataclass
class TrainResult:
    model_path: Path
    manifest: Manifest
    history: list[EpochRecord] = field(default_factory=list)


def random_affine(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small rotation (+-5 degrees), scale (+-5%) and shift (+-3%); never a flip."""
    height, width = pixels.shape
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), rng.uniform(-5, 5), rng.uniform(0.95, 1.05))
    matrix[:, 2] += rng.uniform(-0.03, 0.03, 2) * (width, height)
    return cv2.warpAffine(pixels, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class RadiographDataset(Dataset):
    """Rows of a label table as (network input, labels, known-mask) tensors."""

    def __init__(self, table: LabelTable, prep: Preprocessing, augment: bool, seed: int = 0) -> None:
        self.table, self.prep, self.augment, self.seed, self.epoch = table, prep, augment, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pixels = read_radiograph(self.table.paths[index], allow_any_view=True).pixels
        if self.augment:
            pixels = random_affine(pixels, np.random.default_rng((self.seed, self.epoch, index)))
        image, _ = preprocess(pixels, self.prep)
        return (torch.from_numpy(image), torch.from_numpy(self.table.labels[index]),
                torch.from_numpy(self.table.known[index]))


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the known labels only."""
    losses = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")
    return (losses * known).sum() / known.sum().clamp(min=1.0)


def _distributed() -> tuple[int, int, int]:
    """(rank, local rank, world size), joining the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def _initial_model(config: TrainConfig) -> tuple[nn.Module, Manifest]:
    size = (config.image_size, config.image_size)
    if config.init is not None:
        model, manifest = load_checkpoint(config.init)
        manifest.name, manifest.preprocessing = config.name, replace(manifest.preprocessing, size=size)
        return model, manifest
    torch.manual_seed(config.seed)
    model = build(config.architecture, num_classes=len(CHEXPERT_CLASSES))
    return model, Manifest(name=config.name, architecture=config.architecture, preprocessing=Preprocessing(size=size))


def _predict(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool) -> tuple[np.ndarray, float]:
    model.eval()
    scores, losses, weights = [], 0.0, 0.0
    with torch.no_grad(), torch.autocast(device.type, enabled=amp):
        for images, labels, known in loader:
            logits = model(images.to(device))
            losses += float(masked_bce(logits, labels.to(device), known.to(device))) * float(known.sum())
            weights += float(known.sum())
            scores.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(scores), losses / max(weights, 1.0)


def train(config: TrainConfig, log: Callable[[str], None] = print,
          progress: Callable[[int, int, float, float], None] | None = None) -> TrainResult:
    """Train (or resume) and write ``<out>/last.pt`` after every epoch and ``<out>/model.pt``
    (a chexplain checkpoint with thresholds) at the end. ``progress(step, steps, loss, eta_s)``."""
    rank, local_rank, world = _distributed()
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    amp = device.type == "cuda"
    model, manifest = _initial_model(config)
    train_table = read_labels(config.train_csv, config.data, config.uncertainty, config.frontal_only)
    valid_table = read_labels(config.valid_csv, config.data, config.uncertainty, config.frontal_only)
    if not len(train_table) or not len(valid_table):
        raise InputError(config.train_csv if not len(train_table) else config.valid_csv, "no frontal images")
    train_set = RadiographDataset(train_table, manifest.preprocessing, config.augment, config.seed)
    valid_set = RadiographDataset(valid_table, manifest.preprocessing, augment=False)
    sampler = DistributedSampler(train_set, world, rank, seed=config.seed) if world > 1 else None
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(train_set, config.batch_size, shuffle=sampler is None, sampler=sampler, generator=generator,
                              num_workers=config.workers, drop_last=len(train_set) > config.batch_size)
    valid_loader = DataLoader(valid_set, config.batch_size, num_workers=config.workers)
    model = model.to(device)
    net = nn.parallel.DistributedDataParallel(model, [local_rank] if amp else None) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(len(train_loader), 1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    history: list[EpochRecord] = []
    start_epoch = 0
    state_path = config.out / STATE_NAME
    if config.resume:
        if not state_path.is_file():
            raise ConfigError(f"nothing to resume: no {state_path}")
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"]
        history = [EpochRecord(**record) for record in state["history"]]
        log(f"resuming after epoch {start_epoch} of {config.epochs} from {state_path}")
    if rank == 0:
        log(f"training {manifest.name}: {len(train_table)} train / {len(valid_table)} validation images "
            f"({config.uncertainty}), {config.image_size}px, batch {config.batch_size} x {world} process(es), "
            f"{config.epochs} epochs on {device}{' with mixed precision' if amp else ''}")
    scores = np.zeros((0, len(CHEXPERT_CLASSES)))
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        train_set.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        total, seen = 0.0, 0
        for step, (images, labels, known) in enumerate(train_loader, 1):
            with torch.autocast(device.type, enabled=amp):
                logits = net(images.to(device))
            loss = masked_bce(logits, labels.to(device), known.to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            total, seen = total + float(loss.detach()) * len(images), seen + len(images)
            if progress and rank == 0:
                left = (config.epochs - epoch) * steps_per_epoch - step
                progress(epoch * steps_per_epoch + step, config.epochs * steps_per_epoch, total / seen,
                         (time.perf_counter() - began) / step * left)
        scores, valid_loss = _predict(model, valid_loader, device, amp)
        aurocs = per_class(valid_table.labels, scores, valid_table.known, CHEXPERT_CLASSES, auroc)
        defined = [v for v in aurocs.values() if v is not None]
        record = EpochRecord(epoch + 1, total / max(seen, 1), valid_loss, aurocs,
                             float(np.mean(defined)) if defined else None, time.perf_counter() - began)
        history.append(record)
        if rank == 0:
            mean = f"{record.mean_auroc:.3f}" if record.mean_auroc is not None else "n/a"
            log(f"epoch {record.epoch}/{config.epochs}: train loss {record.train_loss:.4f}, "
                f"validation loss {valid_loss:.4f}, mean AUROC {mean} ({record.seconds:.0f} s)")
            config.out.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                        "scaler": scaler.state_dict(), "epoch": epoch + 1, "history": [asdict(h) for h in history],
                        "config": config.to_dict()}, state_path)
    if not len(scores):
        scores, _ = _predict(model, valid_loader, device, amp)
    thresholds = per_class(valid_table.labels, scores, valid_table.known, CHEXPERT_CLASSES, youden_threshold)
    manifest.thresholds = {c: (t if t is not None else 0.5) for c, t in thresholds.items()}
    manifest.weights = Weights(source="chexplain", file=MODEL_NAME, training_data=(
        f"{len(train_table)} images of {config.train_csv} ({config.uncertainty}), {config.epochs} epochs; "
        f"thresholds by Youden's J on {len(valid_table)} images of {config.valid_csv}"))
    model_path = config.out / MODEL_NAME
    if rank == 0:
        save_checkpoint(model.cpu(), manifest, model_path)
        log(f"model: {model_path}")
    if world > 1:
        dist.destroy_process_group()
    return TrainResult(model_path, manifest, history)


def eta_text(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    seconds = max(0, int(math.ceil(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
