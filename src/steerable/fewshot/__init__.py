"""Few-shot steerable alignment (DESIGN.md §4): tasks, pair embeddings, NP-BTL and NP-DPO."""
