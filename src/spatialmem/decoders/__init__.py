"""Cross-view decoders."""

from spatialmem.decoders.twin import TwinDecoder

__all__ = ["TwinDecoder"]
