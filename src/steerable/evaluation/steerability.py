"""How well a method goes where it is asked, read off its sweep: each grid point i asks with
weights w_i (a tagged method: also targets t_i, in units of the training std) and its answers
reach the normalised mean z_i. Beside the hypervolume and the Spearman controllability:

    gain            how far the answers move per unit of weight along the asked direction, in
                    training stds: the least-squares slope sum_i <m_i, d_i> / sum_i |d_i|^2
    orthogonality   the side effects (Chang et al. 2025, arXiv 2505.23816): of each point's move
                    m_i, the share perpendicular to what it asked, |m_i - proj_(d_i) m_i| / |m_i|
                    (the sine of their angle), averaged over the points that moved: 0 when every
                    move follows its request, 1 when every move is sideways (with K = 2, both
                    objectives rising or falling together instead of trading off)
    miscalibration  over- or undershoot along the asked direction, for a method asked for
                    targets (RiC): the same slope with d_i = t_i - mean t, minus 1; positive: the
                    answers move further than the targets do, negative: short of them, 0: as far

where d_i = w_i - mean w is what point i asks relative to the grid's centre and m_i = z_i - mean z
where its answers went relative to the method's own centre. Moves are measured from the centres,
as Chang et al. measure them from the text they started from: a constant offset from the targets
(every answer one std short, say) is accuracy, not steering, and is not counted here. A method
asked by weights alone states no size of move, so its miscalibration is undefined (None; the
report shows "-").

The mean inner product of weights and normalised rewards (PARM's MIP) is
`sweep.mean_inner_product`; PARM and UniARM scale each objective to [0, 1] over every method's
answers, this project by the training statistics, so one comparison's values are comparable with
each other, not with those papers'.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from steerable.evaluation.sweep import SweepPoint

STILL = 1e-9  # a move (or request) shorter than this, in training stds, is no move


def moves(asked: np.ndarray, achieved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d, m): each point's request and its answers' mean, relative to their means over the grid."""
    asked, achieved = np.asarray(asked, dtype=float), np.asarray(achieved, dtype=float)
    return asked - asked.mean(axis=0), achieved - achieved.mean(axis=0)


def slope(asked: np.ndarray, achieved: np.ndarray) -> float | None:
    """sum_i <m_i, d_i> / sum_i |d_i|^2: how far the answers moved along the requests, per unit
    of request; None where nothing different was asked."""
    d, m = moves(asked, achieved)
    size = float((d * d).sum())
    return None if size <= STILL**2 else float((m * d).sum() / size)


def orthogonality(asked: np.ndarray, achieved: np.ndarray) -> float | None:
    """The mean over the points that moved (and asked for a move) of |m_i - proj_(d_i) m_i| / |m_i|;
    None where no point did."""
    d, m = moves(asked, achieved)
    dd, mm = (d * d).sum(axis=1), (m * m).sum(axis=1)
    keep = (dd > STILL**2) & (mm > STILL**2)
    if not keep.any():
        return None
    d, m, dd, mm = d[keep], m[keep], dd[keep], mm[keep]
    sideways = m - ((m * d).sum(axis=1) / dd)[:, None] * d
    return float(np.mean(np.sqrt((sideways * sideways).sum(axis=1) / mm)))


def steerability(points: Sequence[SweepPoint], targets: bool = False) -> dict[str, float | None]:
    """gain, orthogonality and miscalibration of a sweep (the module's definitions); each None
    where the points lack normalised means (an objective without statistics) or weights (a base
    model's point), and miscalibration None unless `targets` (the points' `requested` are
    targets in units of the training std) and every point records one."""
    found = {"gain": None, "orthogonality": None, "miscalibration": None}
    if len(points) < 2 or any(not p.weights or p.normalised_mean is None for p in points):
        return found
    weights = np.array([p.weights for p in points], dtype=float)
    achieved = np.array([p.normalised_mean for p in points], dtype=float)
    found["gain"] = slope(weights, achieved)
    found["orthogonality"] = orthogonality(weights, achieved)
    if targets and all(p.requested is not None for p in points):
        asked = slope(np.array([p.requested for p in points], dtype=float), achieved)
        found["miscalibration"] = None if asked is None else asked - 1.0
    return found
