"""Hydra config tree: the primary configs (serve, generate) and one folder per group."""
