"""teacli-shapes knows only the words of its grammar: its presets list them, and a prompt with other words is told
which are ignored and what to write instead (generation.checks.vocabulary_warning)."""

from __future__ import annotations

import pytest

from teacli.demo.shapes import grammar_words, parse_caption
from teacli.generation.checks import check_settings, vocabulary_warning
from teacli.generation.generate import GenerationSpec, prepare_generation
from teacli.generation.progress import Progress
from teacli.models.catalog import builtin_presets

SHAPES_PRESETS = ("teacli-shapes", "teacli-shapes-fine")


class Warnings(Progress):
    def __init__(self) -> None:
        self.said: list[str] = []

    def warning(self, message: str) -> None:
        self.said.append(message)


@pytest.mark.parametrize("name", SHAPES_PRESETS)
def test_the_presets_list_exactly_the_grammars_words(name):
    vocabulary = builtin_presets()[name].vocabulary
    assert vocabulary is not None and sorted(vocabulary.words) == sorted(grammar_words())
    parse_caption(vocabulary.example)  # the suggested prompt is a caption of the grammar


def test_the_grammar_words_cover_every_caption():
    from teacli.demo.shapes import evaluation_captions

    known = set(grammar_words())
    assert all(set(str(caption).split()) <= known for caption in evaluation_captions())
    assert {"red", "circle", "small", "top", "left", "background"} <= known and "cat" not in known


def test_a_prompt_outside_the_grammar_is_told_what_is_ignored_and_what_to_try():
    warning = vocabulary_warning(builtin_presets()["teacli-shapes"], "a cute cat wearing a hat")
    assert warning == (
        "teacli-shapes knows only shapes, colours, sizes and positions (it draws one shape on a plain background): "
        "'cute', 'cat', 'wearing', 'hat' are ignored; try \"a red circle on a blue background\""
    )


def test_a_prompt_in_its_words_and_a_model_without_a_vocabulary_get_no_warning():
    shapes = builtin_presets()["teacli-shapes"]
    assert vocabulary_warning(shapes, "A small RED circle on a blue background, at the top.") is None
    assert vocabulary_warning(builtin_presets()["flux-dev"], "a cute cat wearing a hat") is None


def test_many_unknown_words_are_counted_and_prompts_warned_about_once():
    shapes = builtin_presets()["teacli-shapes"]
    warning = vocabulary_warning(shapes, ["a cat", "a dog", "one two three four five six seven"])
    assert "'cat', 'dog', 'one', 'two', 'three', 'four' and 3 more are ignored" in warning
    assert "'fox' is ignored" in vocabulary_warning(shapes, "a red fox")


def test_the_warning_is_never_refused_by_strict():
    """--strict refuses settings that make caching useless; a prompt's words are not one (generate passes False)."""
    said = Warnings()
    prepare_generation(GenerationSpec("a cute cat", model="teacli-shapes", strict=True), said)
    assert len(said.said) == 1 and "'cute', 'cat' are ignored" in said.said[0]
    check_settings([vocabulary_warning(builtin_presets()["teacli-shapes"], "a cat")], False, said)
    assert len(said.said) == 2


def test_generate_and_prompts_warn_before_loading(runner, tmp_path):
    from teacli.cli import app

    (tmp_path / "prompts.txt").write_text("a red circle on a blue background\na cat on a mat\n", encoding="utf-8")
    for args in (["a cute cat wearing a hat", "--out", "x.png"], ["--prompts", "prompts.txt", "--out-dir", "out"]):
        result = runner.invoke(app, ["generate", *args, "--steps", "5", "--overwrite"])
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "teacli-shapes knows only" in warnings[0], result.stderr
        assert "'cat'" in warnings[0] and "'circle'" not in warnings[0]
