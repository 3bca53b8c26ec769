import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steerable import Preference, SteerableError
from steerable.conditioning import (
    TagFormat,
    format_tags,
    parse_tags,
    preference_to_targets,
    tagged_messages,
)

names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,11}", fullmatch=True)
values = st.floats(-50, 50, allow_nan=False)


def test_format_tags_rounds_to_one_decimal():
    assert format_tags({"brief": 0.74, "relevant": -1.25, "x": -0.01}) == (
        "<brief> 0.7 <relevant> -1.2 <x> 0.0"
    )
    # rounding, not truncation: up when the dropped digits are past the half, as round() does
    assert format_tags({"a": 0.76, "b": -1.26, "c": 0.05, "d": 1.96}) == "<a> 0.8 <b> -1.3 <c> 0.1 <d> 2.0"


@given(values, st.integers(0, 3))
def test_a_tag_is_the_nearest_value_at_its_precision(value, decimals):
    written = parse_tags(format_tags({"t": value}, decimals))["t"]
    assert abs(written - value) <= 0.5 * 10**-decimals + 1e-9


@given(st.dictionaries(names, values, min_size=1, max_size=5), st.integers(0, 3))
def test_tags_round_trip(targets, decimals):
    parsed = parse_tags(format_tags(targets, decimals))
    assert list(parsed) == list(targets)
    for name, value in targets.items():
        assert parsed[name] == pytest.approx(round(value, decimals), abs=10**-decimals)


def test_tags_are_found_inside_a_rendered_prompt():
    text = "<|im_start|>system\n<brief> 1.5 <relevant> -0.3<|im_end|>\n<|im_start|>user\nHi"
    assert parse_tags(text) == {"brief": 1.5, "relevant": -0.3}


def test_non_finite_target_is_an_error():
    with pytest.raises(SteerableError, match="finite"):
        format_tags({"brief": math.nan})


def test_tag_placement():
    system = tagged_messages("Hi?", "<a> 1.0", TagFormat("system"), system="Be kind.")
    assert system == [
        {"role": "system", "content": "Be kind.\n<a> 1.0"},
        {"role": "user", "content": "Hi?"},
    ]
    user = tagged_messages("Hi?", "<a> 1.0", TagFormat("user_end"))
    assert user == [{"role": "user", "content": "Hi?\n\n<a> 1.0"}]
    with pytest.raises(SteerableError, match="placement"):
        TagFormat("prefix")


def test_both_placements_render_on_a_template_without_a_system_role(tiny_nosys_path):
    from transformers import AutoTokenizer

    from steerable.generation import render_chat

    tokenizer = AutoTokenizer.from_pretrained(tiny_nosys_path)
    system = render_chat(tokenizer, tagged_messages("Hi?", "<a> 1.0", TagFormat("system"), system="Be kind."))
    assert system == "<start_of_turn>user\nBe kind.\n<a> 1.0\n\nHi?<end_of_turn>\n<start_of_turn>model\n"
    user = render_chat(tokenizer, tagged_messages("Hi?", "<a> 1.0", TagFormat("user_end"), system="Be kind."))
    assert user == "<start_of_turn>user\nBe kind.\n\nHi?\n\n<a> 1.0<end_of_turn>\n<start_of_turn>model\n"
    assert parse_tags(system) == parse_tags(user) == {"a": 1.0}


LO, HI = [-2.0, -1.0], [2.0, 3.0]


@pytest.mark.parametrize(
    ("mapping", "weights", "expected"),
    [
        # linf: R = lo + min(K w, 1)(hi - lo), K = 2
        ("linf", [0.5, 0.5], [2.0, 3.0]),
        ("linf", [0.2, 0.8], [-2 + 0.4 * 4, 3.0]),
        ("linf", [1.0, 0.0], [2.0, -1.0]),
        # l2: R = lo + w / ||w||_2 (hi - lo)
        ("l2", [0.6, 0.8], [-2 + 0.6 * 4, -1 + 0.8 * 4]),
        ("l2", [0.5, 0.5], [-2 + 4 / math.sqrt(2), -1 + 4 / math.sqrt(2)]),
        # linear: R = lo + w (hi - lo)
        ("linear", [0.25, 0.75], [-1.0, 2.0]),
    ],
)
def test_mappings_against_hand_computed_values(mapping, weights, expected):
    pref = Preference.parse(weights, ["a", "b"])
    targets = preference_to_targets(pref, LO, HI, mapping)
    assert list(targets) == ["a", "b"]
    assert list(targets.values()) == pytest.approx(expected)


def test_unknown_mapping():
    with pytest.raises(SteerableError, match="mapping"):
        preference_to_targets(Preference.parse([1, 1], ["a", "b"]), LO, HI, "cubic")


@given(st.lists(st.floats(0, 1), min_size=3, max_size=3).filter(lambda w: sum(w) > 1e-6))
def test_targets_stay_between_lo_and_hi(weights):
    pref = Preference.parse(weights, ["a", "b", "c"])
    for mapping in ("linf", "l2", "linear"):
        targets = preference_to_targets(pref, [-1, -1, -1], [1, 2, 3], mapping)
        for value, lo, hi in zip(targets.values(), [-1, -1, -1], [1, 2, 3], strict=True):
            assert lo - 1e-9 <= value <= hi + 1e-9
