"""Analysis: numbers about recurrent networks, usable on any rnnlab model.

* ``parameters.py`` — ``count_parameters``, ``closed_form_parameters``
* ``gradients.py`` — ``hidden_gradient_norms`` (‖∂L/∂h_t‖ for every t), ``fit_decay_rate`` (the per-step
  factor of a log-linear fit), ``gradient_norm`` (the global norm clipping sees)
* ``gates.py`` — ``gate_saturation`` (left/right saturation per gate unit, Karpathy et al. 2015)
* ``ngram.py`` — ``NGramLM``, ``best_order``: the interpolated Witten–Bell character n-gram baseline
* ``autoregressive.py`` — ``fit_ar``, ``ARModel``, ``naive_forecast``: classical forecasting baselines
"""

from .autoregressive import ARModel, fit_ar, naive_forecast
from .gates import Saturation, gate_saturation
from .gradients import fit_decay_rate, gradient_norm, hidden_gradient_norms
from .ngram import NGramLM, best_order
from .parameters import closed_form_parameters, count_parameters

__all__ = [
    "closed_form_parameters", "count_parameters",
    "hidden_gradient_norms", "fit_decay_rate", "gradient_norm",
    "gate_saturation", "Saturation",
    "NGramLM", "best_order",
    "ARModel", "fit_ar", "naive_forecast",
]
