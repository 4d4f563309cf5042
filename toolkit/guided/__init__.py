"""Guided decoding on xgrammar: grammar compilation (cached, off the event loop),
per-request matchers and the per-step token bitmask. Imports torch and xgrammar; the API
reaches it only through the engine."""
