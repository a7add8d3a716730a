"""Read a teacli-shapes picture back: its background colour, its shape's colour and its shape.

Deterministic geometry, no learned weights: every pixel takes the nearest palette colour; the
background is the most common colour of the 2-pixel border; the shape's colour is the most common
other colour; the shape is told apart by the widths of the largest patch of that colour at
fractions of its height (an upright triangle narrows towards the top; a square keeps its full
width near its top and bottom, a circle does not). The patch's bounding-box fill is reported too.

    python -m teacli.demo.checker PICTURE [PICTURE ...]
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from teacli.demo.shapes import COLORS, PALETTE, Caption

BORDER = 2
MIN_SHAPE_PIXELS = 12  # fewer pixels of any other colour than this: no shape was drawn
# Cuts half-way between the ideal shapes' values, so a blurred or rounded edge moves a shape little.
TAPER_BELOW = 0.67  # width a quarter down over width three quarters down: triangle 1/3, others 1
SHOULDER = 0.15  # how far from the top and bottom the shoulders are measured
SQUARE_SHOULDERS = 0.86  # shoulder width over the widest row: circle 0.71, square 1

_PALETTE = np.array([PALETTE[name] for name in COLORS], dtype=np.float32)


@dataclass(frozen=True)
class Reading:
    background: str
    color: str | None  # None when no shape is found
    shape: str | None
    fill: float | None = None  # the largest patch's area over its bounding box's

    def __str__(self) -> str:
        if self.color is None:
            return f"no shape on a {self.background} background"
        return f"a {self.color} {self.shape} on a {self.background} background (fill {self.fill:.2f})"


def read(image: Image.Image) -> Reading:
    labels = palette_labels(image)
    border = np.concatenate(
        [labels[:BORDER].ravel(), labels[-BORDER:].ravel(), labels[:, :BORDER].ravel(), labels[:, -BORDER:].ravel()]
    )
    background = int(np.bincount(border, minlength=len(COLORS)).argmax())
    others = labels[labels != background]
    if others.size < MIN_SHAPE_PIXELS:
        return Reading(COLORS[background], None, None)
    color = int(np.bincount(others, minlength=len(COLORS)).argmax())
    patch = largest_patch(labels == color)
    rows, cols = np.nonzero(patch)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    fill = float(patch.sum() / box)
    return Reading(COLORS[background], COLORS[color], classify(patch[rows.min() : rows.max() + 1]), fill)


def classify(patch: np.ndarray) -> str:
    """Tell the shape from its widths at fractions of its height (`patch`: its rows, top first).

    An upright triangle is a third as wide a quarter down as three quarters down; a circle is 0.71
    of its widest 15% from the top or bottom, a square (even with rounded corners) nearly 1.
    """
    widths = patch.sum(axis=1).astype(np.float64)

    def width_at(fraction: float) -> float:
        position = fraction * (len(widths) - 1)
        low = int(np.floor(position))
        high = min(low + 1, len(widths) - 1)
        return float(widths[low] + (widths[high] - widths[low]) * (position - low))

    if width_at(0.25) < TAPER_BELOW * width_at(0.75):
        return "triangle"
    shoulders = min(width_at(SHOULDER), width_at(1 - SHOULDER))
    return "square" if shoulders >= SQUARE_SHOULDERS * widths.max() else "circle"


def palette_labels(image: Image.Image) -> np.ndarray:
    """Each pixel's nearest palette colour, as an index into COLORS."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    distances = ((pixels[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(axis=-1)
    return distances.argmin(axis=-1)


def largest_patch(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of `mask`: stray pixels of the colour elsewhere do not count."""
    seen = np.zeros_like(mask, dtype=bool)
    best: list[tuple[int, int]] = []
    height, width = mask.shape
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        region, queue = [], deque([start])
        while queue:
            y, x = queue.popleft()
            region.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(region) > len(best):
            best = region
    patch = np.zeros_like(mask, dtype=bool)
    patch[tuple(np.array(best).T)] = True
    return patch


@dataclass(frozen=True)
class Scores:
    """Percentages of pictures whose background colour, shape colour and shape match the caption."""

    count: int
    background: float
    color: float
    shape: float

    def passes(self) -> bool:
        """The bar teacli-shapes must clear: 95% backgrounds, 90% shape colours, 80% shapes."""
        return self.background >= 95 and self.color >= 90 and self.shape >= 80

    def to_dict(self) -> dict:
        return {"count": self.count, "background": self.background, "color": self.color, "shape": self.shape}


def score(pairs: Iterable[tuple[Caption, Reading]]) -> Scores:
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no pictures to score")

    def percent(hits: int) -> float:
        return round(100.0 * hits / len(pairs), 1)

    return Scores(
        count=len(pairs),
        background=percent(sum(r.background == c.background for c, r in pairs)),
        color=percent(sum(r.color == c.color for c, r in pairs)),
        shape=percent(sum(r.shape == c.shape for c, r in pairs)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    paths = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m teacli.demo.checker PICTURE [PICTURE ...]", file=sys.stderr)
        return 2
    status = 0
    for path in paths:
        try:
            with Image.open(path) as image:
                print(f"{path}: {read(image)}")
        except (OSError, ValueError) as error:
            print(f"error: cannot read {path}: {error}; give a PNG or JPEG picture", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
