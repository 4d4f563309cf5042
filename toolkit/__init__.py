"""toolkit: a declarative, config-first LLM serving toolkit."""

__version__ = "0.1.0"
