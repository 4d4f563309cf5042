"""Structured config schemas, their registration with Hydra, and the bench group's checks
(validation and resolution of a whole config: toolkit/resolve.py)."""
