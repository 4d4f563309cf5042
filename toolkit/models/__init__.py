"""Model implementations, their registry, and the loader that finds and fills them."""
