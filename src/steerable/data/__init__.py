"""Data: reading and writing (prompt, response) tables, and the embedded prompt set."""

from steerable.data.loading import load_pairs, read_table, write_table
from steerable.data.prompts import load_prompts

__all__ = ["load_pairs", "load_prompts", "read_table", "write_table"]
