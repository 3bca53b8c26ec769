import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steerable import Preference, SteerableError

NAMES = ("brief", "relevant", "positive")


def test_by_name_normalises_and_fills_missing_with_zero():
    pref = Preference.parse({"brief": 3, "relevant": 1}, NAMES)
    assert pref.as_dict() == {"brief": 0.75, "relevant": 0.25, "positive": 0.0}


def test_cli_text_forms():
    assert Preference.parse("brief=0.7, relevant=0.3", NAMES[:2]).weights == pytest.approx((0.7, 0.3))
    assert Preference.parse("1,1,2", NAMES).weights == pytest.approx((0.25, 0.25, 0.5))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"brief": -0.1, "relevant": 1}, "negative"),
        ([0.5, float("nan"), 0.5], "finite"),
        ([0.5, float("inf"), 0.5], "finite"),
        ([0, 0, 0], "all zero"),
        ([0.5, 0.5], "2 weight(s) but there are 3"),
        ({"brevity": 1.0}, "unknown objective"),
        ("brief=0.5,0.5", "mixes"),
        ("brief=1,brief=2", "twice"),
        ("brief=abc", "not a number"),
        ("", "empty"),
    ],
)
def test_bad_preferences_are_clear_errors(value, message):
    with pytest.raises(SteerableError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Preference.parse(value, NAMES)


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=3, max_size=3).filter(lambda w: sum(w) > 1e-9))
def test_positional_weights_land_on_the_simplex_in_proportion(weights):
    pref = Preference.parse(weights, NAMES)
    assert math.isclose(sum(pref.weights), 1.0, rel_tol=1e-9)
    assert all(w >= 0 for w in pref.weights)
    total = sum(weights)
    for given_w, w in zip(weights, pref.weights, strict=True):
        assert w == pytest.approx(given_w / total)


@pytest.mark.parametrize(
    "value",
    [{"brief": 1e308, "relevant": 1e308}, [1e308, 1e308, 1e308], "1e308,1e308,0", [10**400, 1, 1]],
)
def test_weights_too_large_to_add_up_are_an_error_naming_them(value):
    with pytest.raises(SteerableError) as caught:
        Preference.parse(value, NAMES)
    assert "brief" in str(caught.value) and "\n" not in str(caught.value)


def test_generate_refuses_a_preference_that_overflows_in_one_line(tiny_ric):
    from typer.testing import CliRunner

    from steerable.cli import app

    _, ric = tiny_ric
    result = CliRunner().invoke(app, ["generate", "--model", str(ric), "--prefer", "1e308,1e308", "Hi"])
    assert result.exit_code == 2, result.output
    assert "brief" in result.output and len(result.output.strip().splitlines()) == 1
