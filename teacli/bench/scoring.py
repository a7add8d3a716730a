"""Scoring a bench's pictures beyond PSNR and SSIM: the teacli-shapes checker reads what a picture shows."""

from __future__ import annotations

from typing import Any


def checker_reading(prompt: str, output: Any) -> tuple[bool, bool, bool] | None:
    """The teacli-shapes checker's verdict on a picture of a caption from its grammar: whether it reads the
    captioned background, shape colour and shape. None for other prompts or outputs (not a picture)."""
    from PIL import Image

    from ..demo.checker import read
    from ..demo.shapes import parse_caption

    if not isinstance(output, Image.Image):
        return None
    try:
        caption = parse_caption(prompt)
    except (ValueError, IndexError):
        return None
    reading = read(output.convert("RGB"))
    return reading.background == caption.background, reading.color == caption.color, reading.shape == caption.shape
