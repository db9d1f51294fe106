"""Saving screenshots of widgets, and telling whether a screenshot shows anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PyQt6.QtGui import QImage
from PyQt6.QtWidgets import QWidget


def image_to_array(image: QImage) -> np.ndarray:
    """RGBA uint8 array (height × width × 4) of a QImage."""
    image = image.convertToFormat(QImage.Format.Format_RGBA8888)
    width, height = image.width(), image.height()
    buffer = image.constBits()
    buffer.setsize(image.sizeInBytes())
    rows = np.frombuffer(buffer, np.uint8).reshape(height, image.bytesPerLine())
    return rows[:, : width * 4].reshape(height, width, 4).copy()


def is_blank(image: QImage, min_distinct_colors: int = 16) -> bool:
    """True if the image is (nearly) one flat color: a failed render or an empty grab."""
    pixels = image_to_array(image)[..., :3].reshape(-1, 3)
    if pixels.size == 0:
        return True
    step = max(1, len(pixels) // 200_000)
    packed = pixels[::step].astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    return len(np.unique(packed)) < min_distinct_colors or float(pixels[::step].std()) < 2.0


def save_screenshot(widget: QWidget, path: str | Path) -> QImage:
    """Grab ``widget`` (OpenGL children included) and save it as PNG; returns the image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = widget.grab().toImage()
    if not image.save(str(path)):
        raise OSError(f"could not write screenshot {path}")
    return image
