"""Deep supervised hashing in JAX/Flax: learn binary codes for image retrieval."""

__version__ = "0.1.0"
