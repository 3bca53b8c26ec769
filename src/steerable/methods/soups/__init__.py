"""Rewarded Soups: one RL policy per objective, interpolated in weight space at inference."""
