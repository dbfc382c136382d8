"""Benchmarks run from the package (``rnnlab bench``): ``engine.py`` times the engines against
torch.nn, JAX/Flax (``jax_peer.py``, in its own process) and onnxruntime (``onnx_peer.py``); ``split.py``
splits the native training step into its GEMMs and the rest; ``timing.py`` and ``stream.py`` hold the
timing helpers."""
