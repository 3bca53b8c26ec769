"""Evaluation shared by every method: preference grids, sweeps, Pareto fronts, hypervolume."""
