"""NP-DPO: a policy steered by a few of a user's own choices (a context encoder and FiLM layers)."""
