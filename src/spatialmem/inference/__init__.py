"""Inference drivers for Spann3R.

* [`OnlineReconstructor`][spatialmem.inference.OnlineReconstructor]: streaming reconstruction, one
  frame in, one finished frame out (one frame of latency), with keyframe subsampling and a
  constant-size memory state.
* [`SegmentedReconstructor`][spatialmem.inference.SegmentedReconstructor]: the same stream cut into
  overlapping segments with a fresh memory each, chained by similarity fits on the overlap (for
  models whose memory registers only a short horizon).
* [`offline_reconstruction`][spatialmem.inference.offline_reconstruction]: unordered images, ordered
  first (pair-confidence graph, then next-best-view or a maximum spanning tree), then reconstructed.
"""

from spatialmem.inference.loops import LoopClosure
from spatialmem.inference.offline import (
    OfflineOrder,
    OfflineResult,
    ViewChoice,
    initial_pair,
    offline_reconstruction,
    pair_scores,
    spanning_tree_order,
)
from spatialmem.inference.online import FrameResult, OnlineReconstructor, StreamLoop
from spatialmem.inference.segments import (
    SegmentedReconstructor,
    Segments,
    SegmentScaleWarning,
    recommended_segments,
)

__all__ = [
    "FrameResult",
    "LoopClosure",
    "OfflineOrder",
    "OfflineResult",
    "OnlineReconstructor",
    "SegmentScaleWarning",
    "SegmentedReconstructor",
    "Segments",
    "StreamLoop",
    "ViewChoice",
    "initial_pair",
    "offline_reconstruction",
    "pair_scores",
    "recommended_segments",
    "spanning_tree_order",
]
