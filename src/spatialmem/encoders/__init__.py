"""Image encoders."""

from spatialmem.encoders.croco import CroCoEncoder, EncoderOutput

__all__ = ["CroCoEncoder", "EncoderOutput"]
