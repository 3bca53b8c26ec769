"""MOSLIM: one multi-head classification reward model, intensity tags, and RL or DPO on an
off-the-shelf policy."""
