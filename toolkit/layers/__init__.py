"""Stateless building blocks shared by the model implementations."""
