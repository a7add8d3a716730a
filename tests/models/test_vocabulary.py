"""A preset's `vocabulary`: the words a model trained on a small language knows, validated like the other fields."""

from __future__ import annotations

import pytest
import yaml

from teacli.models.catalog import PresetError, builtin_presets, load_preset_file, parse_preset, preset_to_dict
from teacli.models.preset import Vocabulary, prompt_words

VOCABULARY = {
    "words": ["a", "red", "blue", "circle", "on", "background"],
    "about": "colours",
    "example": "a red circle",
}


def preset_with(tmp_path, vocabulary) -> str:
    data = preset_to_dict(builtin_presets()["tiny-flux"]) | {"vocabulary": vocabulary}
    path = tmp_path / "words.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def test_a_vocabulary_is_read_and_written_back(tmp_path):
    preset = load_preset_file(preset_with(tmp_path, VOCABULARY))
    assert preset.vocabulary == Vocabulary(tuple(VOCABULARY["words"]), "colours", "a red circle")
    assert parse_preset(preset_to_dict(preset), preset.source) == preset


def test_presets_without_one_read_any_text():
    assert builtin_presets()["flux-dev"].vocabulary is None
    assert "vocabulary" not in preset_to_dict(builtin_presets()["flux-dev"])


@pytest.mark.parametrize(
    ("vocabulary", "field", "words"),
    [
        (["a", "red"], "vocabulary", "expected a mapping with words, about, example"),
        (VOCABULARY | {"colour": 1}, "vocabulary.colour", "unknown field"),
        (VOCABULARY | {"words": []}, "vocabulary.words", "expected a list of the words"),
        (VOCABULARY | {"words": "a red"}, "vocabulary.words", "expected a list of the words"),
        (VOCABULARY | {"words": ["a", "Red"]}, "vocabulary.words", "expected single lower-case words, got 'Red'"),
        (VOCABULARY | {"words": ["a", "red circle"]}, "vocabulary.words", "expected single lower-case words"),
        (VOCABULARY | {"words": ["a", True]}, "vocabulary.words", "got True"),  # YAML's unquoted on
        ({k: v for k, v in VOCABULARY.items() if k != "about"}, "vocabulary.about", "missing"),
        (VOCABULARY | {"example": " "}, "vocabulary.example", "expected a non-empty string"),
        (VOCABULARY | {"example": "a green circle"}, "vocabulary.example", "outside vocabulary.words: green"),
    ],
)
def test_a_bad_vocabulary_names_the_file_and_field(tmp_path, vocabulary, field, words):
    path = preset_with(tmp_path, vocabulary)
    with pytest.raises(PresetError) as raised:
        load_preset_file(path)
    message = str(raised.value)
    assert message.startswith(f"preset {path}: field '{field}': ") and words in message, message


def test_unknown_words_are_read_as_a_word_level_tokenizer_reads_them():
    vocabulary = Vocabulary(tuple(VOCABULARY["words"]), "colours", "a red circle")
    assert prompt_words("A Red, circle! 3 times") == ["a", "red", "circle", "times"]
    assert vocabulary.unknown("A RED circle on a blue background") == []
    assert vocabulary.unknown("a cute cat, a cute hat") == ["cute", "cat", "hat"]  # each once, in order
