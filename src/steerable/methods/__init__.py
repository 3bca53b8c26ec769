"""Training recipes, one module per method: a config dataclass and a function that runs it."""
