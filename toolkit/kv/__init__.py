"""KV cache: the block manager (pure Python) and the tensor pool."""
