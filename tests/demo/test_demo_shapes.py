"""The shapes grammar, the drawing and the checker that scores teacli-shapes."""

import random

import pytest
from PIL import Image, ImageFilter

from teacli.demo.checker import Reading, main, read, score
from teacli.demo.evaluate import SweepRow, recommended_threshold
from teacli.demo.shapes import (
    COLORS,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    Caption,
    draw,
    evaluation_captions,
    parse_caption,
    sample_caption,
)


def drawn(count, seed=3):
    rng = random.Random(seed)
    captions = [sample_caption(rng) for _ in range(count)]
    return captions, [draw(caption, rng) for caption in captions]


def test_grammar_covers_what_the_issue_names():
    assert {"red", "green", "blue", "yellow", "white", "black", "orange", "purple"} <= set(COLORS)
    assert {"circle", "square", "triangle"} <= set(SHAPES)
    assert set(SIZES) == {"small", "large"}
    assert set(POSITIONS) == {"at the top", "at the bottom", "on the left", "on the right"}


def test_captions_read_back_and_never_match_background():
    captions, _ = drawn(400)
    for caption in captions:
        assert caption.color != caption.background
        assert parse_caption(str(caption)) == caption
    assert str(Caption("red", "circle", "blue")) == "a red circle on a blue background"
    assert str(Caption("red", "circle", "blue", "large", "on the left")) == (
        "a large red circle on a blue background on the left"
    )
    assert {c.size for c in captions} == {None, *SIZES} and {c.position for c in captions} == {None, *POSITIONS}


@pytest.mark.parametrize("text", ["a cat", "a red circle on a blue sky", "a pink circle on a blue background", ""])
def test_text_outside_the_grammar_is_refused(text):
    with pytest.raises(ValueError, match="not a teacli-shapes caption"):
        parse_caption(text)


def test_drawing_is_deterministic_and_positions_move_the_shape():
    caption = Caption("red", "square", "blue", "small", "on the left")
    first, second = draw(caption, random.Random(1)), draw(caption, random.Random(1))
    assert first.tobytes() == second.tobytes() and first.size == (64, 64)
    columns = [x for x in range(64) for y in range(64) if first.getpixel((x, y)) == PALETTE["red"]]
    assert columns and max(columns) < 32  # the whole shape is in the left half
    assert first.getpixel((0, 0)) == PALETTE["blue"]


def test_evaluation_captions_are_fixed():
    captions = evaluation_captions()
    assert len(captions) == 100 and captions == evaluation_captions()
    assert len(set(captions)) > 90 and {c.shape for c in captions} == set(SHAPES)


def test_checker_reads_every_drawn_picture_right():
    captions, images = drawn(600)
    result = score(zip(captions, (read(image) for image in images)))
    assert (result.background, result.color, result.shape) == (100.0, 100.0, 100.0)


def test_checker_tolerates_blurred_edges():
    captions, images = drawn(300, seed=9)
    blurred = [image.filter(ImageFilter.GaussianBlur(1.2)) for image in images]
    result = score(zip(captions, (read(image) for image in blurred)))
    assert result.background == 100.0 and result.color == 100.0 and result.shape >= 99.0


def test_checker_fill_ratios_follow_the_geometry():
    fills = {shape: read(draw(Caption("white", shape, "black", "large"), random.Random(0))).fill for shape in SHAPES}
    assert fills["square"] == pytest.approx(1.0)
    assert fills["circle"] == pytest.approx(3.14159 / 4, abs=0.02)
    assert fills["triangle"] == pytest.approx(0.5, abs=0.02)


def test_checker_ignores_stray_pixels_and_reports_an_empty_picture():
    image = draw(Caption("yellow", "triangle", "purple"), random.Random(0))
    for x in range(5, 11, 2):
        image.putpixel((x, 5), PALETTE["yellow"])  # specks of the shape's colour away from it
    assert read(image).shape == "triangle"
    empty = read(Image.new("RGB", (64, 64), PALETTE["green"]))
    assert empty == Reading("green", None, None)
    assert str(empty) == "no shape on a green background"


def test_scores_and_the_bar():
    captions = [Caption("red", "circle", "blue"), Caption("red", "square", "blue")]
    readings = [Reading("blue", "red", "circle", 0.78), Reading("blue", "orange", "circle", 0.8)]
    result = score(zip(captions, readings))
    assert (result.count, result.background, result.color, result.shape) == (2, 100.0, 50.0, 50.0)
    assert not result.passes()
    with pytest.raises(ValueError):
        score([])


def test_checker_command(tmp_path, capsys):
    picture = tmp_path / "p.png"
    draw(Caption("blue", "circle", "white"), random.Random(0)).save(picture)
    (tmp_path / "bad.png").write_text("not a picture")
    assert main([str(picture)]) == 0
    assert "a blue circle on a white background" in capsys.readouterr().out
    assert main([str(tmp_path / "bad.png")]) == 1
    assert capsys.readouterr().err.startswith("error: cannot read")


def _row(thresh, background, color, shape):
    from teacli.demo.checker import Scores

    return SweepRow(thresh, Scores(100, background, color, shape), computed=28, calls=28, seconds=1.0)


def test_recommended_threshold_is_the_largest_within_tolerance():
    rows = [_row(None, 99, 95, 90), _row(0.1, 99, 95, 89), _row(0.2, 98, 94, 88), _row(0.3, 99, 92.5, 90)]
    assert recommended_threshold(rows) == 0.2  # 0.3 loses 2.5 points of colour
    assert recommended_threshold(rows, tolerance=3) == 0.3
    assert recommended_threshold(rows[:1] + [_row(0.1, 90, 95, 90)]) is None
