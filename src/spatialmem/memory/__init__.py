"""Spatial memory: :class:`SpatialMemory` (learned norms + policies), :class:`MemoryState` (the
per-sequence tensors), :class:`MemoryConfig` and the :class:`MemoryEncoder` of memory values.
Pure memory maths lives in :mod:`spatialmem.memory.ops`."""

from spatialmem.memory import ops
from spatialmem.memory.encoder import MemoryEncoder
from spatialmem.memory.spatial_memory import MemoryConfig, SpatialMemory
from spatialmem.memory.state import MemoryState

__all__ = ["MemoryConfig", "MemoryEncoder", "MemoryState", "SpatialMemory", "ops"]
