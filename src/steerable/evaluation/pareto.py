"""Pareto fronts and hypervolume, for objectives that are all maximised."""

from __future__ import annotations

import numpy as np

from steerable.errors import SteerableError


def _points(points) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.ndim != 2 or array.shape[0] == 0:
        raise SteerableError(f"points must be a non-empty [n, k] array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise SteerableError("points contain NaN or inf")
    return array


def non_dominated(points) -> np.ndarray:
    """Boolean mask of the points no other point dominates (>= everywhere, > somewhere).
    Duplicates of a non-dominated point are all kept."""
    import moocore

    # moocore minimises; negate to maximise.
    return np.asarray(moocore.is_nondominated(-_points(points), keep_weakly=True))


def hypervolume(points, reference) -> float:
    """Volume dominated by `points` above `reference` (maximisation). Points that do not
    strictly exceed the reference in every objective add nothing."""
    import moocore

    points, reference = _points(points), np.asarray(reference, dtype=float)
    if reference.shape != (points.shape[1],):
        raise SteerableError(f"reference point has {reference.size} values; points have {points.shape[1]}")
    return float(moocore.hypervolume(-points, ref=-reference))
