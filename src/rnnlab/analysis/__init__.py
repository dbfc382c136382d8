"""Analysis: numbers about recurrent networks — parameter counts, and more as they land."""

from .parameters import closed_form_parameters, count_parameters

__all__ = ["closed_form_parameters", "count_parameters"]
