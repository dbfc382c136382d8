"""Benchmarks run from the package (``rnnlab bench``): ``engine.py`` times the engines against
torch.nn and JAX/Flax (``jax_peer.py``, in its own process)."""
