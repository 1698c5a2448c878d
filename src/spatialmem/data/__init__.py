"""Data: synthetic scenes for tests and the demo."""

from spatialmem.data.synthetic import synthetic_sequence, to_model_range

__all__ = ["synthetic_sequence", "to_model_range"]
