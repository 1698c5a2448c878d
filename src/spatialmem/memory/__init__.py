"""Spatial memory: [`SpatialMemory`][spatialmem.memory.SpatialMemory] (learned norms + policies),
[`MemoryState`][spatialmem.memory.MemoryState] (the per-sequence tensors),
[`MemoryConfig`][spatialmem.memory.MemoryConfig] and the
[`MemoryEncoder`][spatialmem.memory.MemoryEncoder] of memory values. Pure memory maths lives in
`spatialmem.memory.ops`."""

from spatialmem.memory import ops
from spatialmem.memory.encoder import MemoryEncoder
from spatialmem.memory.spatial_memory import MemoryConfig, SpatialMemory
from spatialmem.memory.state import MemoryState

__all__ = ["MemoryConfig", "MemoryEncoder", "MemoryState", "SpatialMemory", "ops"]
