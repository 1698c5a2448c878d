"""Spatial memory: :class:`SpatialMemory` (learned norms + policies), :class:`MemoryState` (the
per-sequence tensors) and :class:`MemoryConfig`. Pure memory maths lives in
:mod:`spatialmem.memory.ops`."""

from spatialmem.memory import ops
from spatialmem.memory.spatial_memory import MemoryConfig, SpatialMemory
from spatialmem.memory.state import MemoryState

__all__ = ["MemoryConfig", "MemoryState", "SpatialMemory", "ops"]
