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


def beats_base(points, base, scale) -> list[dict]:
    """How `points` [n, K] fare against one `base` point [K], per objective k, in units of
    `scale` [K] (each objective's training std): of the points above the base on k, the one
    that loses least on the other objectives, as {"index", "gain" on k, "loss": the largest
    shortfall on another objective, 0 where it loses nothing}. Where no point is above the
    base on k: index and loss None, gain the best (<= 0)."""
    points, base = _points(points), np.asarray(base, dtype=float)
    scale = np.asarray(scale, dtype=float)
    if base.shape != (points.shape[1],) or scale.shape != base.shape or not (scale > 0).all():
        raise SteerableError(f"base and scale need {points.shape[1]} values (scale > 0)")
    gain = (points - base) / scale  # (n, K)
    found = []
    for k in range(points.shape[1]):
        others = np.delete(-gain, k, axis=1)  # shortfall on every other objective
        loss = np.clip(others.max(axis=1), 0, None) if others.size else np.zeros(len(points))
        above = np.flatnonzero(gain[:, k] > 0)
        if not above.size:
            found.append({"index": None, "gain": float(gain[:, k].max()), "loss": None})
            continue
        best = above[np.lexsort((-gain[above, k], loss[above]))[0]]  # least loss, then most gain
        found.append({"index": int(best), "gain": float(gain[best, k]), "loss": float(loss[best])})
    return found
