"""The steerability report's numbers on hand-built sweeps: hypervolume (K = 2 and 3), the mean
inner product, gain, orthogonality and miscalibration, each against values worked out by hand."""

import math

import numpy as np
import pytest

from steerable.evaluation.pareto import hypervolume
from steerable.evaluation.steerability import orthogonality, slope, steerability
from steerable.evaluation.sweep import SweepPoint, mean_inner_product


def point(weights, z, requested=None):
    """A grid point whose answers reached the normalised means `z` (raw means the same)."""
    z = [float(v) for v in z]
    return SweepPoint(
        weights=[float(w) for w in weights],
        mean=z,
        stderr=[0.0] * len(z),
        n=4,
        seconds=1.0,
        generated_tokens=10,
        requested=requested,
        normalised_mean=z,
        normalised_stderr=[0.0] * len(z),
    )


def test_hypervolume_of_hand_computed_fronts_in_two_and_three_objectives():
    # K = 2: a staircase of three boxes, 1x3 + 1x2 + 1x1 above the reference (0, 0)
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [0, 0]) == pytest.approx(6)
    # the reference moved to (1, 0): the first box is gone, the others lose one unit of width
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [1, 0]) == pytest.approx(2 + 1)
    # K = 3: three 2x1x1 boxes; pairs overlap in unit cubes, all three in the same one:
    # 3 x 2 - 3 x 1 + 1 = 4
    assert hypervolume([[2, 1, 1], [1, 2, 1], [1, 1, 2]], [0, 0, 0]) == pytest.approx(4)
    # a dominated point adds nothing; one below the reference on any axis adds nothing
    extra = [[1, 1, 1], [5, 5, -1]]
    assert hypervolume([[2, 1, 1], [1, 2, 1], [1, 1, 2], *extra], [0, 0, 0]) == pytest.approx(4)


def test_mean_inner_product_by_hand():
    points = [point([1, 0], [2, -1]), point([0.5, 0.5], [0, 0]), point([0, 1], [-1, 3])]
    assert mean_inner_product(points) == pytest.approx((2 + 0 + 3) / 3)


def test_a_sweep_that_moves_as_asked_has_no_side_effects_and_its_gain_is_its_slope():
    # z = 2 w + offset: every move is twice the request, along it
    points = [point([w, 1 - w], [2 * w + 1, 2 * (1 - w) - 1]) for w in (0, 0.25, 0.5, 0.75, 1)]
    found = steerability(points)
    assert found["gain"] == pytest.approx(2)
    assert found["orthogonality"] == pytest.approx(0, abs=1e-12)
    assert found["miscalibration"] is None  # asked by weights alone: no size of move to miss


def test_a_sweep_that_moves_both_objectives_together_is_all_side_effect():
    # with K = 2 a request trades one objective for the other; these answers raise or lower both
    points = [point([w, 1 - w], [3 * w, 3 * w]) for w in (0, 0.5, 1)]
    found = steerability(points)
    assert found["orthogonality"] == pytest.approx(1)
    assert found["gain"] == pytest.approx(0, abs=1e-12)


def test_orthogonality_is_the_sine_of_the_angle_between_move_and_request():
    # each move is the request plus as much again perpendicular to it: 45 degrees
    d = np.array([[1.0, -1.0], [-1.0, 1.0]])
    perpendicular = np.array([[1.0, 1.0], [-1.0, -1.0]])
    assert orthogonality(d, d + perpendicular) == pytest.approx(math.sin(math.pi / 4))
    assert slope(d, d + perpendicular) == pytest.approx(1)


def test_relevance_lost_while_brevity_is_asked_shows_as_a_side_effect_in_three_objectives():
    asked = np.eye(3)  # brief, positive, relevant: each objective alone
    # asked for brevity, the answers gain it and lose relevance; the others do as asked
    achieved = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    points = [point(w, z) for w, z in zip(asked, achieved, strict=True)]
    # by hand: mean z = (1/3, 1/3, 0), so the moves m_i and requests d_i = e_i - 1/3 are
    #   m_1 = (2/3, -1/3, -1), d_1 = (2/3, -1/3, -1/3): sideways part (-2/9, 1/9, -5/9), sin^2 = 30/126
    #   m_2 = (-1/3, 2/3, 0),  d_2 = (-1/3, 2/3, -1/3): sideways (-1/18, 2/18, 5/18),    sin^2 = 30/180
    #   m_3 = (-1/3, -1/3, 1), d_3 = (-1/3, -1/3, 2/3): sideways (1/9, 1/9, 1/9),        sin^2 = 3/99
    by_hand = (math.sqrt(30 / 126) + math.sqrt(30 / 180) + math.sqrt(3 / 99)) / 3
    assert steerability(points)["orthogonality"] == pytest.approx(by_hand)
    # the same answers without the relevance lost: no side effect at all
    clean = [point(w, w) for w in asked]
    assert steerability(clean)["orthogonality"] == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize(("scale", "expected"), [(1.5, 0.5), (0.5, -0.5), (1.0, 0.0)])
def test_miscalibration_is_the_overshoot_along_the_targets(scale, expected):
    targets = [[-1.0, 1.0], [0.0, 0.0], [1.0, -1.0], [2.0, -2.0]]
    # the answers move `scale` times as far as the targets do, from a centre one std below them
    points = [
        point([i / 3, 1 - i / 3], [scale * t - 1 for t in target], requested=target)
        for i, target in enumerate(targets)
    ]
    found = steerability(points, targets=True)
    assert found["miscalibration"] == pytest.approx(expected)  # the offset is not counted


def test_no_number_where_the_sweep_cannot_say():
    still = [point([w, 1 - w], [0.5, 0.5]) for w in (0, 1)]
    found = steerability(still, targets=True)
    assert found["orthogonality"] is None  # nothing moved
    assert found["miscalibration"] is None  # no point recorded a target
    unscaled = [point([w, 1 - w], [w, 1 - w]) for w in (0, 1)]
    for p in unscaled:
        p.normalised_mean = None  # an objective without statistics
    assert steerability(unscaled) == {"gain": None, "orthogonality": None, "miscalibration": None}
    assert steerability(unscaled[:1])["gain"] is None  # one point: no move
