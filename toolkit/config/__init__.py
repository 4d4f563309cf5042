"""Structured config schemas, their registration with Hydra, and resolution."""
