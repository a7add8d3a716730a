"""TeaCacheConfig checks every field the Python API can be handed: a TeaCacheError naming the field (never a
command-line flag, never a raw ValueError or OverflowError), numpy scalars and arrays accepted as numbers, bools
not, and the stored values plain Python ones."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from teacli import TeaCacheConfig, TeaCacheError

IDENTITY = [1.0, 0.0]
SHORT = 200


def refused(**kwargs) -> str:
    arguments = {"coefficients": IDENTITY} | kwargs
    with pytest.raises(TeaCacheError) as raised:
        TeaCacheConfig(**arguments)
    assert type(raised.value) is TeaCacheError
    message = str(raised.value)
    assert len(message) < SHORT and "--" not in message, message  # the API's field, not a CLI flag
    return message


COEFFICIENTS = "coefficients must be a list of numbers, highest power first, got"


@pytest.mark.parametrize(
    "value",
    [
        "12",
        "1, 2",
        b"12",
        bytearray(b"12"),
        {"a": 1.0, "b": 2.0},
        5,
        1.5,
        [True, False],
        ["1", "2"],
        [[1.0], [2.0]],
    ],
    ids=["str", "str-list", "bytes", "bytearray", "mapping", "int", "float", "bools", "strings", "nested"],
)
def test_coefficients_must_be_a_list_of_numbers(value):
    assert refused(coefficients=value).startswith(COEFFICIENTS)


def test_a_string_of_digits_is_not_read_as_coefficients():
    # It used to become [1.0, 2.0]: a string iterates as its characters.
    assert refused(coefficients="12") == f"{COEFFICIENTS} '12'"


@pytest.mark.parametrize("value", [[1.0, math.inf], [math.nan, 0.0], [10**400, 0.0]], ids=["inf", "nan", "huge-int"])
def test_coefficients_must_be_finite(value):
    assert refused(coefficients=value).startswith("coefficients must be finite, got")


def test_a_long_bad_coefficient_list_is_shown_short():
    assert refused(coefficients=[*range(10_000), "x"]).endswith("...")


@pytest.mark.parametrize(
    "value",
    [
        np.array([1.0, 0.0]),
        np.array([1, 0], dtype=np.int32),
        torch.tensor([1.0, 0.0]),
        (1, 0),
        [np.float32(1.0), np.int64(0)],
        [torch.tensor(1.0), torch.tensor(0)],
        (c for c in IDENTITY),
    ],
    ids=["numpy", "numpy-int", "tensor", "tuple", "numpy-scalars", "0-d-tensors", "generator"],
)
def test_coefficients_from_numpy_torch_and_tuples(value):
    config = TeaCacheConfig(coefficients=value)
    assert config.coefficients == IDENTITY and all(type(c) is float for c in config.coefficients)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ((0.1, 0.2, 0.3), "rel_l1_range must be (low, high), two finite numbers, got (0.1, 0.2, 0.3)"),
        ((0.1,), "rel_l1_range must be (low, high), two finite numbers"),
        (("a", "b"), "rel_l1_range must be (low, high), two finite numbers, got ('a', 'b')"),
        ("ab", "rel_l1_range must be (low, high), two finite numbers, got 'ab'"),
        ({"low": 0.1, "high": 0.2}, "rel_l1_range must be (low, high), two finite numbers"),
        (0.5, "rel_l1_range must be (low, high), two finite numbers, got 0.5"),
        ((True, False), "rel_l1_range must be (low, high), two finite numbers"),
        ((0.1, math.nan), "rel_l1_range must be (low, high), two finite numbers"),
        ((0.1, 10**400), "rel_l1_range must be (low, high), two finite numbers"),
        ((0.5, 0.1), "rel_l1_range must be (low, high) with low <= high, got (0.5, 0.1)"),
    ],
)
def test_rel_l1_range_shape_and_types(value, words):
    assert refused(rel_l1_range=value).startswith(words)


@pytest.mark.parametrize("value", [(0.05, 0.2), [0.05, 0.2], np.array([0.05, 0.2]), torch.tensor([0.05, 0.2])])
def test_rel_l1_range_accepts_any_pair_of_numbers(value):
    config = TeaCacheConfig(coefficients=IDENTITY, rel_l1_range=value)
    assert config.rel_l1_range == pytest.approx((0.05, 0.2)) and all(type(v) is float for v in config.rel_l1_range)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(thresh=True), "thresh must be a number, got True"),
        (dict(thresh="0.2"), "thresh must be a number, got '0.2'"),
        (dict(thresh=10**400), "thresh must be a finite number >= 0 (0 computes every step), got an integer of 401"),
        (dict(thresh=math.inf), "thresh must be a finite number >= 0"),
        (dict(ret_steps=True), "ret_steps must be a non-negative integer, got True"),
        (dict(ret_steps=2.0), "ret_steps must be a non-negative integer, got 2.0"),
        (dict(ret_steps=-1), "ret_steps must be a non-negative integer"),
        (dict(cutoff_steps=np.float64(3)), "cutoff_steps must be a non-negative integer"),
        (dict(num_inference_steps=10**400), "num_inference_steps must be at most 10000"),
        (dict(num_inference_steps=10_001), "num_inference_steps must be at most 10000"),
        (dict(start=True), "start must be a fraction of the schedule between 0 and 1, got True"),
        (dict(end=10**400), "end must be a fraction of the schedule between 0 and 1, got an integer of 401 digits"),
        (dict(start=math.nan), "start must be a fraction of the schedule between 0 and 1, got nan"),
        (dict(max_cached_in_row=True), "max_cached_in_row must be an integer >= 1 or None, got True"),
        (dict(max_cached_in_row=2.0), "max_cached_in_row must be an integer >= 1 or None, got 2.0"),
        (dict(max_cached_in_row=0), "max_cached_in_row must be an integer >= 1 or None, got 0; to compute"),
        (dict(cache_device=True), "cache_device True is not a torch device"),
        (dict(cache_device=10**30), "cache_device 1000000000000000000000000000000 is not a torch device"),
        (dict(cache_device="x" * 10_000), "cache_device 'xxxx"),
        (dict(cache_device="meta"), "cache_device 'meta' cannot hold residuals"),
        (dict(sync_decisions="yes"), "sync_decisions must be 'auto', True or False, got 'yes'"),
        (dict(sync_decisions=1), "sync_decisions must be 'auto', True or False, got 1"),
        (dict(record_output_change="no"), "record_output_change must be True or False, got 'no'"),
        (dict(coefficients_source=5), "coefficients_source must be a string"),
        (dict(modulated_input=3), "modulated_input must be None or the name of an extractor's alternative"),
    ],
)
def test_every_field_is_checked(kwargs, words):
    assert refused(**kwargs).startswith(words)


def test_numpy_scalars_pass_as_numbers_and_are_stored_as_python_ones():
    config = TeaCacheConfig(
        thresh=np.float32(0.25),
        coefficients=IDENTITY,
        ret_steps=np.int64(2),
        cutoff_steps=np.int32(7),
        num_inference_steps=np.int64(8),
        start=np.float64(0.1),
        end=np.float32(0.9),
        max_cached_in_row=np.int16(3),
        record_output_change=np.bool_(True),
        sync_decisions=np.bool_(False),
    )
    assert config.thresh == pytest.approx(0.25) and type(config.thresh) is float
    assert (config.ret_steps, config.cutoff_steps, config.num_inference_steps, config.max_cached_in_row) == (2, 7, 8, 3)
    assert all(type(v) is int for v in (config.ret_steps, config.cutoff_steps, config.num_inference_steps))
    assert type(config.max_cached_in_row) is int
    assert type(config.start) is float and type(config.end) is float
    assert config.record_output_change is True and config.sync_decisions is False


def test_replace_checks_again_and_keeps_what_was_valid():
    config = TeaCacheConfig(coefficients=np.array(IDENTITY), rel_l1_range=(0, 1), cache_device="cpu")
    again = replace(config, thresh=0.3)
    assert again.coefficients == IDENTITY and again.rel_l1_range == (0.0, 1.0)
    assert again.cache_device == torch.device("cpu")
    with pytest.raises(TeaCacheError, match="rel_l1_range"):
        replace(config, rel_l1_range="01")


def test_defaults_still_construct():
    config = TeaCacheConfig(coefficients=IDENTITY)
    assert config.thresh == 0.2 and config.ret_steps == 0 and config.sync_decisions == "auto"
    assert config.cutoff_steps is None and config.num_inference_steps is None and config.max_cached_in_row is None


def test_an_empty_coefficient_list_is_refused_with_what_to_do():
    message = refused(coefficients=[])
    assert message.startswith("coefficients are required: leave them out (None) and apply with teacli.apply_teacache")


def test_a_config_without_coefficients_leaves_the_preset_fields_to_the_preset():
    # None: teacli.apply_teacache takes the preset's; the engine's own apply refuses such a config.
    config = TeaCacheConfig(max_cached_in_row=np.int64(2))
    assert not config.complete and config.coefficients is None
    assert (config.thresh, config.ret_steps, config.cutoff_steps, config.rel_l1_range) == (None, None, None, None)
    assert config.max_cached_in_row == 2 and type(config.max_cached_in_row) is int  # still checked
    assert TeaCacheConfig(thresh=np.float32(0.5)).thresh == 0.5 and TeaCacheConfig(ret_steps=3).ret_steps == 3
    assert replace(config, start=0.5).thresh is None  # replace keeps "the preset's"


def test_a_config_with_coefficients_or_a_plan_has_the_engine_defaults_for_what_it_leaves_out():
    assert TeaCacheConfig(coefficients=IDENTITY, thresh=None, ret_steps=None).complete
    config = TeaCacheConfig(coefficients=IDENTITY, thresh=None, ret_steps=None)
    assert (config.thresh, config.ret_steps) == (0.2, 0) and type(config.thresh) is float
    from teacli.engine.plan import uniform

    planned = TeaCacheConfig(plan=uniform(8, 4))
    assert planned.complete and (planned.coefficients, planned.thresh, planned.ret_steps) == ([], 0.2, 0)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(thresh="0.3"), "thresh must be a number, got '0.3'"),
        (dict(ret_steps=-1), "ret_steps must be a non-negative integer"),
        (dict(rel_l1_range=(0.5, 0.1)), "rel_l1_range must be (low, high) with low <= high"),
    ],
)
def test_a_config_without_coefficients_checks_what_it_gives(kwargs, words):
    with pytest.raises(TeaCacheError) as raised:
        TeaCacheConfig(**kwargs)
    assert str(raised.value).startswith(words)
