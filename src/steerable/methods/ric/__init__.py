"""Rewards-in-Context: reward-conditioned SFT, online multi-objective rejection sampling, and a
preference mapped to target tags at inference."""
