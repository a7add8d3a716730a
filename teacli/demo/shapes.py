"""The shapes grammar: captions `a [size] {colour} {shape} on a {colour} background [position]`.

Every caption is drawn with Pillow into a 64x64 picture, the only training data teacli-shapes
sees. Drawing is deterministic given a `random.Random`, so a seed fixes a whole dataset.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass

from PIL import Image, ImageDraw

SIZE = 64
# RGB values far enough apart that the nearest palette colour of a pixel is unambiguous.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (245, 225, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "orange": (245, 140, 20),
    "purple": (130, 40, 170),
}
COLORS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")  # no size word means a medium shape
POSITIONS = ("at the top", "at the bottom", "on the left", "on the right")  # none means the centre

RADIUS = {"small": 9, None: 14, "large": 20}  # half the width of the shape, in pixels
OFFSET = 16  # how far a position word moves the shape's centre from the middle
JITTER = 3  # random shift of the centre, so no two pictures of a caption are alike
MARGIN = 2  # pixels kept between the shape and the picture's edge


@dataclass(frozen=True)
class Caption:
    color: str
    shape: str
    background: str
    size: str | None = None
    position: str | None = None

    def __str__(self) -> str:
        size = f"{self.size} " if self.size else ""
        position = f" {self.position}" if self.position else ""
        return f"a {size}{self.color} {self.shape} on a {self.background} background{position}"


def grammar_words() -> list[str]:
    """Every word a caption of the grammar can use: all teacli-shapes was trained on, so all it knows (its presets'
    `vocabulary` lists them for the warning about a prompt's other words)."""
    template = str(Caption("red", "circle", "blue")).split()  # a, on, background, ... around the chosen words
    parts = [*template, *SIZES, *COLORS, *SHAPES, *(word for position in POSITIONS for word in position.split())]
    return list(dict.fromkeys(parts))


def sample_caption(rng: random.Random) -> Caption:
    """Draw a caption from the grammar; size and position are each present half the time."""
    color, background = rng.sample(COLORS, 2)
    shape = rng.choice(SHAPES)
    size = rng.choice(SIZES) if rng.random() < 0.5 else None
    position = rng.choice(POSITIONS) if rng.random() < 0.5 else None
    return Caption(color, shape, background, size, position)


def parse_caption(text: str) -> Caption:
    """The inverse of str(Caption); raises ValueError for text outside the grammar."""
    words = text.strip().lower().split()
    size = words.pop(1) if len(words) > 1 and words[1] in SIZES else None
    position = None
    for candidate in POSITIONS:
        tail = candidate.split()
        if words[-len(tail) :] == tail:
            position, words = candidate, words[: -len(tail)]
            break
    if len(words) != 7 or words[0] != "a" or words[3:5] != ["on", "a"] or words[6] != "background":
        raise ValueError(f"not a teacli-shapes caption: {text!r}")
    color, shape, background = words[1], words[2], words[5]
    if color not in PALETTE or background not in PALETTE or shape not in SHAPES:
        raise ValueError(f"not a teacli-shapes caption: {text!r}")
    return Caption(color, shape, background, size, position)


def draw(caption: Caption, rng: random.Random) -> Image.Image:
    """Draw `caption` with a random jitter of the shape's centre."""
    image = Image.new("RGB", (SIZE, SIZE), PALETTE[caption.background])
    radius = RADIUS[caption.size]
    x, y = _centre(caption.position)
    x = _clamp(x + rng.randint(-JITTER, JITTER), radius)
    y = _clamp(y + rng.randint(-JITTER, JITTER), radius)
    box = (x - radius, y - radius, x + radius, y + radius)
    pen = ImageDraw.Draw(image)
    fill = PALETTE[caption.color]
    if caption.shape == "circle":
        pen.ellipse(box, fill=fill)
    elif caption.shape == "square":
        pen.rectangle(box, fill=fill)
    else:  # an upright isosceles triangle filling the box
        pen.polygon([(x, y - radius), (x + radius, y + radius), (x - radius, y + radius)], fill=fill)
    return image


def _centre(position: str | None) -> tuple[int, int]:
    middle = SIZE // 2
    return {
        None: (middle, middle),
        "at the top": (middle, middle - OFFSET),
        "at the bottom": (middle, middle + OFFSET),
        "on the left": (middle - OFFSET, middle),
        "on the right": (middle + OFFSET, middle),
    }[position]


def _clamp(value: int, radius: int) -> int:
    return max(radius + MARGIN, min(SIZE - 1 - radius - MARGIN, value))


def evaluation_captions(count: int = 100, seed: int = 1234) -> list[Caption]:
    """The fixed captions the checker scores a model on (a different seed from any training data)."""
    rng = random.Random(seed)
    return [sample_caption(rng) for _ in range(count)]


def main(argv: list[str] | None = None) -> int:
    """Print captions from the grammar, one a line: a prompts file for teacli calibrate or generate."""
    parser = argparse.ArgumentParser(prog="python -m teacli.demo.shapes", description=main.__doc__)
    parser.add_argument("--count", type=int, default=78)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    for _ in range(args.count):
        print(sample_caption(rng))
    return 0


if __name__ == "__main__":
    sys.exit(main())
