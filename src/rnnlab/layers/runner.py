"""Moved to :mod:`rnnlab.engine.stack`; kept while engine/fused.py and engine/linear.py still import it here."""

from ..engine.stack import run_stack  # noqa: F401
