"""Weight quantization: one QuantMethod per scheme, chosen by name (see registry.py)."""
