"""Data: synthetic scenes for tests and the demo."""

from spatialmem.data.curriculum import (
    CurriculumClips,
    CurriculumConfig,
    active_ratio,
    sample_clip_indices,
    sampling_interval,
    training_progress,
)
from spatialmem.data.scenes import (
    SceneBatch,
    SceneClip,
    SyntheticScene,
    SyntheticScenes,
    collate_clips,
    synthetic_clip,
)
from spatialmem.data.synthetic import synthetic_sequence, to_model_range

__all__ = [
    "CurriculumClips",
    "CurriculumConfig",
    "SceneBatch",
    "SceneClip",
    "SyntheticScene",
    "SyntheticScenes",
    "active_ratio",
    "collate_clips",
    "sample_clip_indices",
    "sampling_interval",
    "synthetic_clip",
    "synthetic_sequence",
    "to_model_range",
    "training_progress",
]
