"""The picture people want from --compare-baseline: the user's own prompt, uncached beside cached, labelled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

# Small pictures (teacli-shapes draws 64x64) are enlarged, without smoothing, so the strip can be looked at.
MIN_SIDE = 256
GAP = 8
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def side_by_side(uncached: Sequence[Any], cached: Sequence[Any], labels: tuple[str, str]) -> Image.Image:
    """One row per output: the uncached picture on the left, the cached one on the right, under a label band."""
    if not uncached or len(uncached) != len(cached):
        raise ValueError(
            f"side_by_side needs as many uncached as cached pictures, got {len(uncached)} and {len(cached)}"
        )
    pictures = [[image.convert("RGB") for image in pair] for pair in zip(uncached, cached)]
    width, height = pictures[0][0].size
    scale = max(1, -(-MIN_SIDE // min(width, height)))  # round up
    width, height = width * scale, height * scale
    font = _font(max(12, min(width, height) // 16))
    band = font.getbbox("Ag")[3] + GAP
    sheet = Image.new("RGB", (2 * width + GAP, band + len(pictures) * (height + GAP) - GAP), BACKGROUND)
    pen = ImageDraw.Draw(sheet)
    for column, label in enumerate(labels):
        pen.text((column * (width + GAP) + GAP // 2, GAP // 2), label, fill=INK, font=font)
    for row, pair in enumerate(pictures):
        for column, image in enumerate(pair):
            enlarged = image.resize((width, height), Image.NEAREST) if scale > 1 else image
            sheet.paste(enlarged, (column * (width + GAP), band + row * (height + GAP)))
    return sheet


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)  # scalable where Pillow has FreeType
    except (TypeError, OSError):  # an older Pillow, or one built without FreeType: its fixed bitmap font
        return ImageFont.load_default()
