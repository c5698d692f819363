"""masksearch_jax: training LLM search agents with MaskSearch on JAX.

Kept free of heavy imports so that `masksearch --help` and Gin includes stay fast.
"""

__version__ = "0.1.0"
