"""Tokenizer wrapper, chat templates and incremental detokenization."""
