"""Speculative decoding: proposers (ngram, draft model) and the verification of drafts."""
