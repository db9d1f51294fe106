"""The patch classifier of the microarchitecture paper (seed 002), its training, and its files.

Architecture (the paper's public one)::

    patch P×P (128 by default, ≈150 µm at 1.17 µm/px)
    conv 16 7×7 → ReLU → max-pool 2
    conv 32 5×5 → ReLU → max-pool 2
    conv 64 3×3 → ReLU → max-pool 2
    conv 128 3×3 → ReLU → max-pool 2
    fc 1024 → ReLU → dropout 0.3
    fc 64 → ReLU  (the latent: non-negative by this ReLU, which is what NMF needs) → dropout 0.3
    fc n_classes

Convolutions are *valid* (unpadded) and pools floor odd sizes, so every output depends on a
fixed window of the patch and the network can be rewritten fully convolutionally without
changing a single value (:mod:`engine.factors.dense`). For P = 128 the sizes are
128 → 122 → 61 → 57 → 28 → 26 → 13 → 11 → 5 (×128 channels into fc 1024); flooring at 61
and 11 means the last 10 rows/columns of the patch are never seen: the effective window is
118 px (:func:`receptive_field`), starting at the patch's top-left corner.

Preprocessing travels with the model (:class:`Preprocessing`): z-score with the training
image's mean and s.d., the patch size, the pixel size in µm and the intensity type. Applying a
model to an image that differs in any of them is refused with an :class:`InputError` saying
what to change, rather than producing quietly meaningless features.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import InputError
from engine.factors import resolve_device
from engine.factors.patches import (
    BlockSplit, block_split, check_image_and_labels, labelled_centers, read_patches, sample_balanced,
)
from engine.progress import Progress, as_progress
from engine.storage import read_model_file

log = logging.getLogger(__name__)

MODEL_FORMAT = "neurowb.factors_cnn"
MODEL_FORMAT_VERSION = 1
LATENT_DIM = 64
CONV_CHANNELS = (16, 32, 64, 128)
CONV_KERNELS = (7, 5, 3, 3)
FC_HIDDEN = 1024
DEFAULT_PATCH = 128
MIN_PATCH = 54  # smallest patch that leaves a 1×1 map after the last pool
#: Relative pixel-size difference tolerated between the model and an image (1 %).
PIXEL_SIZE_TOLERANCE = 0.01


def conv_output_size(patch_size: int) -> int:
    """Side of the last pooled map for a patch side (5 for 128)."""
    s = int(patch_size)
    for k in CONV_KERNELS:
        s = (s - k + 1) // 2
    return s


def receptive_field(patch_size: int) -> int:
    """Side of the window of the patch (from its top-left corner) that the latent depends on (118 for 128)."""
    # Walk backwards from the fc layer: it reads n×n pooled cells; a pool doubles the extent,
    # a k×k valid conv adds k-1.
    extent = conv_output_size(patch_size)
    for k in reversed(CONV_KERNELS):
        extent = 2 * extent + k - 1
    return extent


def _torch():
    import torch

    return torch


def build_network(n_classes: int, patch_size: int = DEFAULT_PATCH, dropout: float = 0.3):
    """The paper's CNN as a torch module (see the module docstring)."""
    torch = _torch()
    from torch import nn

    if patch_size < MIN_PATCH:
        raise InputError(f"Patch size {patch_size} px is too small for this network (4 valid convolutions and 4 pools): "
                         f"use at least {MIN_PATCH} px (the paper uses 128).")
    if n_classes < 2:
        raise InputError(f"The classifier needs at least 2 regions; got {n_classes}.")

    class PatchCNN(nn.Module):
        def __init__(self):
            super().__init__()
            layers, cin = [], 1
            for cout, k in zip(CONV_CHANNELS, CONV_KERNELS):
                layers += [nn.Conv2d(cin, cout, k), nn.ReLU(), nn.MaxPool2d(2)]
                cin = cout
            self.features = nn.Sequential(*layers)
            side = conv_output_size(patch_size)
            self.fc1 = nn.Linear(cin * side * side, FC_HIDDEN)
            self.fc2 = nn.Linear(FC_HIDDEN, LATENT_DIM)
            self.fc3 = nn.Linear(LATENT_DIM, n_classes)
            self.dropout = nn.Dropout(dropout)
            self.patch_size = patch_size

        def latent(self, x):
            """(N, 1, P, P) normalized patches → (N, 64) non-negative latents."""
            h = self.features(x).flatten(1)
            h = self.dropout(torch.relu(self.fc1(h)))
            return torch.relu(self.fc2(h))

        def forward(self, x):
            return self.fc3(self.dropout(self.latent(x)))

    return PatchCNN()


# ---------------------------------------------------------------------------------------------
# preprocessing definition

@dataclass(frozen=True)
class Preprocessing:
    """How raw pixels become network input; saved with the model and checked on use.

    ``mean``/``std``: z-score constants from the training image (applied unchanged to every
    later image, so that intensities mean the same thing). ``intensity_dtype``: the training
    image's type ("uint8", "uint16", "float32", ...), because a 16-bit image z-scored with 8-bit
    constants is garbage. ``pixel_size_um`` may be None when unknown (then not checked).
    """

    patch_size: int = DEFAULT_PATCH
    pixel_size_um: float | None = None
    mean: float = 0.0
    std: float = 1.0
    intensity_dtype: str = "uint8"
    normalization: str = "zscore"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    @classmethod
    def from_image(cls, image: np.ndarray, patch_size: int = DEFAULT_PATCH, pixel_size_um: float | None = None,
                   max_samples: int = 4_000_000) -> "Preprocessing":
        """Constants measured on ``image`` (on a regular subsample when it is large)."""
        step = max(1, int(math.ceil(math.sqrt(image.size / max_samples))))
        sample = np.asarray(image[::step, ::step], dtype=np.float64)
        std = float(sample.std())
        if not np.isfinite(std) or std <= 0:
            raise InputError("The image is constant (every pixel has the same value): there is no structure to learn. "
                             "Check that the right file or channel was loaded.")
        return cls(patch_size=int(patch_size), pixel_size_um=None if pixel_size_um is None else float(pixel_size_um),
                   mean=float(sample.mean()), std=std, intensity_dtype=str(np.dtype(image.dtype)))

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """float32 z-scored copy of raw pixels."""
        return ((np.asarray(raw, dtype=np.float32) - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32)

    def differences(self, other: "Preprocessing") -> list[str]:
        """Human-readable list of what differs from ``other`` (empty when compatible)."""
        out = []
        if self.patch_size != other.patch_size:
            out.append(f"patch size {self.patch_size} px vs {other.patch_size} px")
        if self.normalization != other.normalization:
            out.append(f"normalization '{self.normalization}' vs '{other.normalization}'")
        if self.pixel_size_um and other.pixel_size_um and not _same_pixel_size(self.pixel_size_um, other.pixel_size_um):
            out.append(f"pixel size {self.pixel_size_um:g} µm vs {other.pixel_size_um:g} µm")
        if self.intensity_dtype != other.intensity_dtype:
            out.append(f"intensity type {self.intensity_dtype} vs {other.intensity_dtype}")
        scale = max(self.std, other.std, 1e-12)
        if abs(self.mean - other.mean) > 1e-6 * scale or abs(self.std - other.std) > 1e-6 * scale:
            out.append(f"z-score constants mean {self.mean:.4g}/s.d. {self.std:.4g} vs {other.mean:.4g}/{other.std:.4g}")
        return out

    def check_image(self, image: np.ndarray, pixel_size_um: float | None = None, what: str = "this image") -> None:
        """Refuse an image the model was not trained for: other pixel size or intensity type."""
        if pixel_size_um is not None and self.pixel_size_um is not None and not _same_pixel_size(pixel_size_um, self.pixel_size_um):
            factor = float(pixel_size_um) / self.pixel_size_um
            raise InputError(
                f"The model was trained at {self.pixel_size_um:g} µm/px but {what} is {float(pixel_size_um):g} µm/px: "
                f"resample the image by {factor:g}× to {self.pixel_size_um:g} µm/px, or train a model at this resolution "
                f"(its {self.patch_size}-px patches would cover a different area of tissue)."
            )
        dtype = str(np.dtype(image.dtype))
        if _dtype_family(dtype) != _dtype_family(self.intensity_dtype):
            raise InputError(
                f"The model was trained on {self.intensity_dtype} intensities but {what} is {dtype}: its z-score "
                f"(mean {self.mean:.4g}, s.d. {self.std:.4g}) would not fit. Convert the image to {self.intensity_dtype} "
                "the same way the training image was made, or train a model on images of this type."
            )


def _same_pixel_size(a: float, b: float) -> bool:
    return abs(float(a) - float(b)) <= PIXEL_SIZE_TOLERANCE * max(abs(float(a)), abs(float(b)))


def _dtype_family(name: str) -> str:
    dt = np.dtype(name)
    if np.issubdtype(dt, np.floating):
        return "float"  # floats carry their own scale: compare by value, not by width
    return name


# ---------------------------------------------------------------------------------------------
# a trained model

@dataclass
class PatchModel:
    """A trained patch classifier with everything needed to apply it to new images.

    ``class_labels[i]`` is the label-map value of output class i; ``class_names`` optional
    region names; ``history`` per-epoch figures; ``metrics`` the final validation figures.
    """

    network: Any
    preprocessing: Preprocessing
    class_labels: list[int]
    class_names: list[str] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def patch_size(self) -> int:
        return self.preprocessing.patch_size

    @property
    def n_classes(self) -> int:
        return len(self.class_labels)

    def save(self, path: str | os.PathLike) -> Path:
        """Write weights, preprocessing and class map atomically (a torch file, loaded weights-only)."""
        torch = _torch()
        from engine import __version__
        from engine.storage import atomic_write_bytes

        payload = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "preprocessing": self.preprocessing.to_dict(),
            "class_labels": [int(c) for c in self.class_labels],
            "class_names": [str(n) for n in self.class_names],
            "history": [{k: float(v) for k, v in h.items()} for h in self.history],
            "metrics": _plain(self.metrics),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "versions": {"neuroworkbench": __version__, "torch": str(torch.__version__)},
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike, expected: Preprocessing | None = None, device=None) -> "PatchModel":
        """Read a model written by :meth:`save`; with ``expected``, refuse one made with other preprocessing."""
        torch = _torch()

        path = Path(path)
        payload = read_model_file(path, lambda p: torch.load(p, map_location="cpu", weights_only=True), MODEL_FORMAT,
                                  MODEL_FORMAT_VERSION, "microarchitecture (factors) model", "train one first")
        prep = Preprocessing.from_dict(payload["preprocessing"])
        if expected is not None:
            diffs = prep.differences(expected)
            if diffs:
                raise InputError(f"Model '{path.name}' was trained with different preprocessing ({'; '.join(diffs)}; "
                                 "model first): use a model trained with these settings, or retrain.")
        net = build_network(len(payload["class_labels"]), prep.patch_size)
        try:
            net.load_state_dict(payload["state_dict"])
        except Exception as exc:
            raise InputError(f"'{path.name}' does not match the network it describes (damaged or edited file): retrain it.",
                             details=str(exc)) from exc
        net.to(resolve_device(device)).eval()
        return cls(network=net, preprocessing=prep, class_labels=list(payload["class_labels"]),
                   class_names=list(payload.get("class_names", [])), history=list(payload.get("history", [])),
                   metrics=dict(payload.get("metrics", {})))


def _plain(obj):
    """Metrics as plain Python (lists, floats) so the file loads with weights_only=True."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


# ---------------------------------------------------------------------------------------------
# batches

def augment_batch(x, generator):
    """Random flips, 90° rotations and intensity jitter (gain 0.9–1.1, offset ±0.1 s.d.), per patch.

    The tissue has no preferred orientation at this scale, so the 8 symmetries of the square are
    free extra data; the jitter stands in for slice-to-slice contrast drift.
    """
    torch = _torch()
    n = x.shape[0]
    dev = x.device
    k = torch.randint(0, 4, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for r in range(4):
        for f in (False, True):
            sel = ((k == r) & (flip == f)).nonzero().flatten().to(dev)
            if len(sel):
                part = x.index_select(0, sel)
                if f:
                    part = part.flip(-1)
                out[sel] = torch.rot90(part, r, dims=(-2, -1))
    gain = (0.9 + 0.2 * torch.rand(n, 1, 1, 1, generator=generator)).to(dev)
    offset = (0.2 * torch.rand(n, 1, 1, 1, generator=generator) - 0.1).to(dev)
    return out * gain + offset


def _to_tensor(image: np.ndarray, centers: np.ndarray, prep: Preprocessing, device):
    torch = _torch()
    raw = read_patches(image, centers, prep.patch_size)
    return torch.from_numpy(prep.normalize(raw)[:, None]).to(device)


def predict_patches(model: PatchModel, image: np.ndarray, centers: np.ndarray, batch_size: int = 128,
                    progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted label values (n,), class probabilities (n, C)) for patches centred at ``centers``."""
    torch = _torch()
    progress = as_progress(progress)
    net = model.network
    device = next(net.parameters()).device
    net.eval()
    probs = np.empty((len(centers), model.n_classes), dtype=np.float32)
    starts = range(0, len(centers), batch_size)
    with torch.no_grad():
        for s in progress.iterate(starts, message="Classifying patches"):
            x = _to_tensor(image, centers[s:s + batch_size], model.preprocessing, device)
            probs[s:s + batch_size] = torch.softmax(net(x), dim=1).cpu().numpy()
    return np.asarray(model.class_labels)[probs.argmax(1)], probs


def confusion_matrix(true: np.ndarray, pred: np.ndarray, classes: list[int]) -> np.ndarray:
    """counts[i, j] = patches of class ``classes[i]`` predicted as ``classes[j]``."""
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(true, pred):
        m[index[int(t)], index[int(p)]] += 1
    return m


def evaluate(model: PatchModel, image: np.ndarray, labels: np.ndarray, n_per_class: int = 200, seed: int = 0,
             centers: dict[int, np.ndarray] | None = None, pixel_size_um: float | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
    """Accuracy and confusion matrix on patches of labelled pixels (e.g. another slice).

    ``centers`` (label → (n, 2)) overrides the sampling, e.g. the validation centres of a
    :class:`~engine.factors.patches.BlockSplit`. Classes the model does not know are ignored.
    """
    labels = np.asarray(labels)
    check_image_and_labels(image, labels)
    model.preprocessing.check_image(image, pixel_size_um)
    if centers is None:
        centers = labelled_centers(labels)
    centers = {c: v for c, v in centers.items() if c in model.class_labels}
    pts, true = sample_balanced(centers, n_per_class, np.random.default_rng(seed), replace=False)
    if len(pts) == 0:
        raise InputError("None of the labelled regions in this label map is a class the model knows "
                         f"(model classes {model.class_labels}): use the same label numbers as in training.")
    pred, _ = predict_patches(model, image, pts, progress=progress)
    cm = confusion_matrix(true, pred, model.class_labels)
    per_class = {int(c): float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan")
                 for i, c in enumerate(model.class_labels)}
    return {"accuracy": float(np.mean(pred == true)), "confusion": cm, "per_class_recall": per_class,
            "n_patches": int(len(true)), "classes": list(model.class_labels)}


# ---------------------------------------------------------------------------------------------
# training

@dataclass
class TrainResult:
    """What :func:`train` returns: the model (best validation epoch), the split, and its figures."""

    model: PatchModel
    split: BlockSplit
    history: list[dict[str, float]]
    val_accuracy: float
    confusion: np.ndarray
    best_epoch: int


def train(image: np.ndarray, labels: np.ndarray, *, pixel_size_um: float | None = None,
          patch_size: int = DEFAULT_PATCH, epochs: int = 20, patches_per_epoch: int = 4096, batch_size: int = 64,
          val_patches_per_class: int = 256, block_size: int | None = None, val_fraction: float = 0.25,
          lr: float = 1e-3, weight_decay: float = 1e-4, dropout: float = 0.3, augment: bool = True,
          class_names: dict[int, str] | None = None, checkpoint: str | os.PathLike | None = None,
          device=None, seed: int = 0, progress: Progress | None = None) -> TrainResult:
    """Train the patch classifier on an image and its region label map (0 = unlabelled).

    Patches are centred on labelled pixels, drawn class-balanced each epoch from the training
    blocks (see :func:`~engine.factors.patches.block_split`); validation uses a fixed set from
    the held-out blocks. Adam with cross-entropy; the weights of the epoch with the best
    validation accuracy are kept (and written to ``checkpoint`` after each improvement).
    Progress is reported and cancellation checked after every batch.
    """
    torch = _torch()
    import torch.nn.functional as F

    progress = as_progress(progress)
    labels = np.asarray(labels)
    check_image_and_labels(image, labels)
    if epochs < 1 or patches_per_epoch < 1 or batch_size < 1:
        raise InputError("epochs, patches per epoch and batch size must all be at least 1.")
    if min(image.shape) < 2:
        raise InputError(f"The image is {image.shape[0]}×{image.shape[1]} px: too small to take patches from.")
    dev = resolve_device(device)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    prep = Preprocessing.from_image(image, patch_size, pixel_size_um)
    split = block_split(labels, patch_size, block_size, val_fraction, seed)
    classes = sorted(split.train_centers)
    empty_train = [c for c in classes if len(split.train_centers[c]) == 0]
    empty_val = [c for c in classes if len(split.val_centers[c]) == 0]
    if empty_train or empty_val:
        missing = ", ".join([f"{c} (no training patches)" for c in empty_train] + [f"{c} (no validation patches)" for c in empty_val])
        raise InputError(
            f"After the spatial training/validation split (blocks of {split.block_size} px, a {2 * split.gap}-px gap "
            f"between sides) these regions have no usable patch centres: {missing}. Label larger regions, use a "
            "smaller block size, or label the region in several places.")
    index = {c: i for i, c in enumerate(classes)}
    val_pts, val_lab = sample_balanced(split.val_centers, val_patches_per_class, np.random.default_rng(seed + 1), replace=False)
    val_x = _to_tensor(image, val_pts, prep, "cpu")  # fixed set, normalized once
    val_y = np.array([index[int(c)] for c in val_lab])

    net = build_network(len(classes), patch_size, dropout).to(dev)
    model = PatchModel(net, prep, classes, [class_names.get(c, str(c)) for c in classes] if class_names else [])
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    per_class = max(1, patches_per_epoch // len(classes))
    n_batches = -(-per_class * len(classes) // batch_size)
    history: list[dict[str, float]] = []
    best = (-1.0, 0, None, None)  # accuracy, epoch, state, confusion

    for epoch in range(epochs):
        pts, lab = sample_balanced(split.train_centers, per_class, rng)
        order = rng.permutation(len(pts))
        pts, y_all = pts[order], np.array([index[int(c)] for c in lab[order]])
        net.train()
        total_loss = correct = seen = 0.0
        for b in range(n_batches):
            progress.check()
            sl = slice(b * batch_size, (b + 1) * batch_size)
            x = _to_tensor(image, pts[sl], prep, "cpu")
            if augment:
                x = augment_batch(x, gen)
            x = x.to(dev)
            y = torch.from_numpy(y_all[sl]).to(dev)
            opt.zero_grad(set_to_none=True)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach()) * len(y)
            correct += float((logits.argmax(1) == y).sum())
            seen += len(y)
            progress.report((epoch + (b + 1) / (n_batches + 1)) / epochs,
                            f"epoch {epoch + 1}/{epochs}: batch {b + 1}/{n_batches}, loss {total_loss / seen:.3f}")
        progress.check()
        net.eval()
        pred = np.empty(len(val_y), dtype=np.int64)
        with torch.no_grad():
            for s in range(0, len(val_y), 256):
                pred[s:s + 256] = net(val_x[s:s + 256].to(dev)).argmax(1).cpu().numpy()
        val_acc = float(np.mean(pred == val_y))
        cm = confusion_matrix(val_y, pred, list(range(len(classes))))
        history.append({"epoch": epoch + 1, "loss": total_loss / seen, "train_accuracy": correct / seen, "val_accuracy": val_acc})
        progress.report((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}: validation accuracy {val_acc:.1%}")
        if val_acc > best[0]:
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best = (val_acc, epoch + 1, state, cm)
            if checkpoint is not None:
                model.history = list(history)
                model.metrics = {"val_accuracy": val_acc, "confusion": cm, "epoch": epoch + 1}
                model.save(checkpoint)

    net.load_state_dict(best[2])
    net.eval()
    model.history = history
    model.metrics = {"val_accuracy": best[0], "confusion": best[3], "epoch": best[1],
                     "split": {"block_size": split.block_size, "gap_px": 2 * split.gap,
                               "centres": {int(c): list(v) for c, v in split.counts().items()}}}
    return TrainResult(model, split, history, best[0], best[3], best[1])
