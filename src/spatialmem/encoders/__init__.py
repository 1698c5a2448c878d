"""Image encoders."""

from spatialmem.encoders.croco import CroCoEncoder, EncodedFrame

__all__ = ["CroCoEncoder", "EncodedFrame"]
