"""The OpenAI-compatible steering server (`steerable serve`)."""
