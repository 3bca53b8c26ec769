import numpy as np
import pytest

from steerable import RewardSet, SteerableError
from steerable.evaluation.pareto import hypervolume, non_dominated
from steerable.evaluation.sweep import controllability, preference_grid, sweep


def test_grid_k2_is_eleven_points_from_0_to_1():
    grid = preference_grid(2)
    assert grid.shape == (11, 2)
    assert grid[:, 0] == pytest.approx(np.linspace(0, 1, 11))
    assert grid.sum(axis=1) == pytest.approx(np.ones(11))


@pytest.mark.parametrize(("k", "resolution", "count"), [(3, 10, 66), (4, 4, 35), (3, 2, 6)])
def test_simplex_lattice_sizes(k, resolution, count):
    # C(resolution + k - 1, k - 1) points, all on the simplex, no duplicates
    grid = preference_grid(k, resolution)
    assert grid.shape == (count, k)
    assert grid.sum(axis=1) == pytest.approx(np.ones(count))
    assert (grid >= 0).all()
    assert len({tuple(r) for r in grid.round(6)}) == count


def test_bad_grids():
    with pytest.raises(SteerableError):
        preference_grid(1)
    with pytest.raises(SteerableError):
        preference_grid(2, 0)


def test_non_dominated_with_ties_and_duplicates():
    points = [[1, 3], [2, 2], [3, 1], [1, 1], [2, 2], [0, 3], [3, 1]]
    assert non_dominated(points).tolist() == [True, True, True, False, True, False, True]


def test_hypervolume_hand_computed():
    # staircase above reference (0, 0): 1*3 + 1*2 + 1*1 = 6
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [0, 0]) == pytest.approx(6)
    # dominated and duplicate points add nothing
    assert hypervolume([[1, 3], [2, 2], [3, 1], [1, 1], [2, 2]], [0, 0]) == pytest.approx(6)
    # a point below the reference adds nothing
    assert hypervolume([[2, 2], [-1, 5]], [0, 0]) == pytest.approx(4)
    assert hypervolume([[1, 1, 1]], [0, 0, 0]) == pytest.approx(1)
    with pytest.raises(SteerableError, match="reference point"):
        hypervolume([[1, 1]], [0, 0, 0])


def test_sweep_and_controllability_with_a_fake_generator():
    rewards = RewardSet.from_specs(["long=builtin:length", "brief=builtin:brevity"])

    def generate(prompts, weights):  # more words as the weight of "long" grows
        return [" ".join(["word"] * (1 + int(10 * weights[0]))) for _ in prompts]

    points = sweep(generate, rewards, ["a", "b", "c"], preference_grid(2))
    assert [p.mean[0] for p in points] == [1 + int(10 * w) for w in np.linspace(0, 1, 11)]
    assert all(p.stderr == [0.0, 0.0] and p.n == 3 for p in points)
    ctrl = controllability(points, rewards.names)
    assert ctrl["long"] == pytest.approx(1.0) and ctrl["brief"] == pytest.approx(1.0)
    with pytest.raises(SteerableError, match="grid has shape"):
        sweep(generate, rewards, ["a"], preference_grid(3))
