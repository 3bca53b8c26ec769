"""MORLHF: one RL policy per weight vector, trained on the weighted sum of normalised rewards."""
