"""Training and evaluation losses for sequence models (Spann3R), composable with ``+`` and ``*``.

Inputs are typed: [`StepPredictions`][spatialmem.types.StepPredictions] (the per-step pair
predictions of a sequence model) and [`SequenceTarget`][spatialmem.types.SequenceTarget]
(ground-truth points, valid mask and frame 0's pose). Every criterion is a
[`Criterion`][spatialmem.losses.Criterion] returning a [`LossOutput`][spatialmem.losses.LossOutput]
subclass:

```python
from spatialmem.losses import ConfidenceRegression, ScaleLoss, Spann3RLoss

criterion = ConfidenceRegression(alpha=0.4) + ScaleLoss()   # = Spann3RLoss(alpha=0.4)
out = criterion(pred, target)
out.loss.backward()
```

By default every sample of a batch is normalised and averaged on its own, so a sample's loss does
not depend on its batch-mates; ``batch_coupled=True`` reproduces the official numbers exactly.
"""

from spatialmem.geometry.alignment import masked_median, median_scale  # re-exported
from spatialmem.losses.base import CombinedCriterion, CombinedOutput, Criterion, LossOutput
from spatialmem.losses.confidence import ConfidenceRegression, alpha_schedule
from spatialmem.losses.normalize import (
    avg_distance_factor,
    gt_in_camera0,
    sequence_factors,
    sequence_pred_factor,
)
from spatialmem.losses.regression import (
    PointRegression,
    RegressionOutput,
    RegressionTerms,
    reduce_terms,
    regression_terms,
    term_names,
)
from spatialmem.losses.scale import ScaleLoss, ScaleLossOutput, scale_loss
from spatialmem.losses.scale_shift_inv import ScaleShiftInvariant, ScaleShiftInvariantOutput
from spatialmem.losses.spann3r import SequenceLossOutput, Spann3RLoss
from spatialmem.types import SequenceTarget, StepPredictions

__all__ = [
    "CombinedCriterion",
    "CombinedOutput",
    "ConfidenceRegression",
    "Criterion",
    "LossOutput",
    "PointRegression",
    "RegressionOutput",
    "RegressionTerms",
    "ScaleLoss",
    "ScaleLossOutput",
    "ScaleShiftInvariant",
    "ScaleShiftInvariantOutput",
    "SequenceLossOutput",
    "SequenceTarget",
    "Spann3RLoss",
    "StepPredictions",
    "alpha_schedule",
    "avg_distance_factor",
    "gt_in_camera0",
    "masked_median",
    "median_scale",
    "reduce_terms",
    "regression_terms",
    "scale_loss",
    "sequence_factors",
    "sequence_pred_factor",
    "term_names",
]
