"""Attention backends over the paged KV cache; see base.AttentionBackend."""
