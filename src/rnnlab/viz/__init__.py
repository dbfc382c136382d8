"""See it unrolled: a network drawn over its time steps with its real values, gates and BPTT's gradients.

* ``trace.py`` — ``unroll(model_or_layer, x, loss=None, lengths=None)`` runs one sequence step by step
  and returns an ``Unrolled``: every level and direction's h_t (and C_t), gates, pre-activations and,
  with a loss, the gradient along every arrow of the picture
* ``layout.py`` — where each box, strip, arrow and label goes (one layout for every output)
* ``svg.py``, ``png.py`` — the layout drawn as SVG and as PNG (matplotlib)
* ``page.py``, ``script.py`` — the interactive page: one self-contained HTML file
"""

from .page import write_page
from .trace import Track, Unrolled, unroll

__all__ = ["unroll", "Unrolled", "Track", "write_page"]
