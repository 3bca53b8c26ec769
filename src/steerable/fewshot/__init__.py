"""Few-shot steerable alignment (Kobalczyk et al. 2024): tasks, pair embeddings, NP-BTL and NP-DPO."""
