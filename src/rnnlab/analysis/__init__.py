"""Analysis: numbers about recurrent networks — parameter counts, and more as they land."""

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
