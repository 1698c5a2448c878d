"""Fixture A7: the losses reproduce the official training and evaluation criteria.

The official numbers are reproduced with ``batch_coupled=True``; the single-element cases check
the per-sample default (which agrees with the official code for ``B = 1``). Everything is read
from the fixture (sizes, batch, number of frames), so variants with other shapes run unchanged.
"""

from typing import Any

import pytest
import torch

from conftest import assert_close, load_fixture
from spatialmem.interop import sequence_target_from_official, step_predictions_from_official
from spatialmem.losses import (
    ConfidenceRegression,
    ScaleLoss,
    ScaleShiftInvariant,
    SequenceTarget,
    Spann3RLoss,
    StepPredictions,
)

FIXTURE = "spann3r_tiny_loss.pt"


@pytest.fixture(scope="module")
def a7() -> dict[str, Any]:
    return load_fixture(FIXTURE)


def _leaf_preds(fx: dict[str, Any]) -> list[list[dict[str, torch.Tensor]]]:
    return [
        [{k: v.clone().requires_grad_(True) for k, v in res.items()} for res in pair]
        for pair in fx["inputs"]["preds_all"]
    ]


def _target(fx: dict[str, Any], multiplier: float = 1.0) -> SequenceTarget:
    target = sequence_target_from_official(fx["inputs"]["gt"])
    if multiplier != 1.0:  # scale the whole scene: world points and camera positions
        pose = target.camera_pose0.clone()
        pose[:, :3, 3] *= multiplier
        target = SequenceTarget(target.pts3d * multiplier, target.valid, pose)
    return target


def _element(pred: StepPredictions, target: SequenceTarget, b: int):
    sl = slice(b, b + 1)
    return (
        StepPredictions(
            pred.pts_view1[sl], pred.conf_view1[sl], pred.pts_view2[sl], pred.conf_view2[sl]
        ),
        SequenceTarget(target.pts3d[sl], target.valid[sl], target.camera_pose0[sl]),
    )


def _scalar(x: Any) -> torch.Tensor:
    return torch.as_tensor(float(x))


def test_official_values(a7):
    tl = a7["train_loss"]
    pred = step_predictions_from_official(a7["inputs"]["preds_all"])
    out = Spann3RLoss(alpha=tl["alpha"], batch_coupled=True)(pred, _target(a7))
    assert_close(out.conf_loss, _scalar(tl["conf_loss"]), what="conf_loss")
    assert_close(out.scale_loss, _scalar(tl["factor_loss"]), what="factor_loss")
    assert_close(out.loss, _scalar(tl["total"]), what="total")
    # The official term is a Python float 0.0 exactly when nothing is selected.
    assert bool(out.scale_selected.any()) == tl["factor_loss_is_tensor"]


def test_official_per_term(a7):
    tl = a7["train_loss"]
    pred = step_predictions_from_official(a7["inputs"]["preds_all"])
    out = Spann3RLoss(alpha=tl["alpha"], batch_coupled=True)(pred, _target(a7))
    assert list(out.term_names) == [t["term"] for t in tl["per_term"]]
    for k, term in enumerate(tl["per_term"]):
        name = term["term"]
        assert int(out.term_valid[k]) == term["n_valid"], name
        assert_close(out.term_dist[k], _scalar(term["mean_dist"]), what=f"{name} mean_dist")
        assert_close(out.terms[k], _scalar(term["conf_weighted"]), what=f"{name} conf_weighted")


def test_official_norm_factors(a7):
    tl, norm = a7["train_loss"], a7["train_loss"]["norm"]
    pred = step_predictions_from_official(a7["inputs"]["preds_all"])
    target = _target(a7)
    out = Spann3RLoss(alpha=tl["alpha"], batch_coupled=True)(pred, target)
    assert_close(out.pr_factor, norm["pr_factor"], what="pr_factor")
    assert_close(out.gt_factor, norm["gt_factor"], what="gt_factor")
    assert torch.equal(out.scale_selected, norm["selected"])
    assert int(out.scale_selected.sum()) == norm["n_selected"]
    assert torch.equal(target.valid.sum((2, 3)).T, norm["nnz_per_frame"])
    assert int(target.valid.sum()) == norm["total_nnz"]
    # The factors are the distance sums over the batch-wide valid-pixel count.
    assert_close(out.pr_factor.detach() * norm["total_nnz"], norm["pred_dist_sum"], what="pred sum")
    assert_close(out.gt_factor * norm["total_nnz"], norm["gt_dist_sum"], what="gt sum")
    # Stand-alone scale criterion: same factors and term.
    scale = ScaleLoss(batch_coupled=True)(pred, target)
    assert_close(scale.pr_factor, norm["pr_factor"], what="ScaleLoss pr_factor")
    assert_close(scale.loss, _scalar(tl["factor_loss"]), what="ScaleLoss loss")


def test_official_details(a7):
    tl = a7["train_loss"]
    pred = step_predictions_from_official(a7["inputs"]["preds_all"])
    out = Spann3RLoss(alpha=tl["alpha"], batch_coupled=True)(pred, _target(a7))
    assert set(out.details) == set(tl["details"])
    for key, want in tl["details"].items():
        assert_close(out.details[key], _scalar(want), what=key)
        assert not out.details[key].requires_grad


def test_official_gradients(a7):
    tl = a7["train_loss"]
    preds = _leaf_preds(a7)
    out = Spann3RLoss(alpha=tl["alpha"], batch_coupled=True)(
        step_predictions_from_official(preds), _target(a7)
    )
    out.loss.backward()
    valid = _target(a7).valid
    for i, pair in enumerate(preds):
        for j, res in enumerate(pair):
            frame_valid = valid[:, i + j]
            for key, leaf in res.items():
                want = tl["grads"][i][j][key]
                # Gradients are ~1e-5: compare relative to their magnitude.
                torch.testing.assert_close(
                    leaf.grad, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()),
                    msg=lambda m, i=i, j=j, key=key: f"grad preds_all[{i}][{j}].{key}: {m}",
                )  # fmt: skip
                invalid = ~frame_valid if leaf.grad.ndim == 3 else ~frame_valid[..., None]
                assert torch.all(leaf.grad.masked_select(invalid.expand_as(leaf.grad)) == 0)


def test_official_gradient_norms_per_part(a7):
    """Gradient norms of the conf loss alone and of the factor term alone."""
    tl = a7["train_loss"]
    for part in ("conf_loss_only", "factor_only"):
        preds = _leaf_preds(a7)
        out = Spann3RLoss(alpha=tl["alpha"], batch_coupled=True)(
            step_predictions_from_official(preds), _target(a7)
        )
        (out.conf_loss if part == "conf_loss_only" else out.scale_loss).backward()
        for i, pair in enumerate(preds):
            for j, res in enumerate(pair):
                for key, leaf in res.items():
                    want = tl["grad_norms"][f"preds_all[{i}][{j}].{key}"][part]
                    got = 0.0 if leaf.grad is None else float(leaf.grad.norm())
                    if want is None:  # the tensor does not enter that part
                        assert got == 0.0, (i, j, key, part)
                    else:
                        assert_close(_scalar(got), _scalar(want), what=f"{i} {j} {key} {part}")


def test_official_factor_cases(a7):
    """Every stored rescaling of the ground truth (how many is read from the fixture)."""
    tl = a7["train_loss"]
    assert tl["factor_cases"], "the fixture stores no factor case"
    pred = step_predictions_from_official(a7["inputs"]["preds_all"])
    for fc in tl["factor_cases"]:
        m = fc["gt_multiplier"]
        out = Spann3RLoss(alpha=tl["alpha"], batch_coupled=True)(pred, _target(a7, m))
        assert_close(out.conf_loss, _scalar(fc["conf_loss"]), what=f"x{m} conf_loss")
        assert_close(out.scale_loss, _scalar(fc["factor_loss"]), what=f"x{m} factor_loss")
        assert_close(out.gt_factor, fc["gt_factor"], what=f"x{m} gt_factor")
        assert int(out.scale_selected.sum()) == fc["n_selected"], m
        assert bool(out.scale_selected.any()) == fc["factor_loss_is_tensor"], m


def test_single_elements_with_per_sample_default(a7):
    tl = a7["train_loss"]
    pred = step_predictions_from_official(a7["inputs"]["preds_all"])
    target = _target(a7)
    batch = Spann3RLoss(alpha=tl["alpha"])(pred, target)  # per-sample default, whole batch
    elements = sorted(case["element"] for case in tl["single_element_cases"])
    assert elements == list(range(target.valid.shape[0])), "one case per batch element"
    for case in tl["single_element_cases"]:
        b = case["element"]
        alone = Spann3RLoss(alpha=tl["alpha"])(*_element(pred, target, b))
        assert_close(alone.conf_loss, _scalar(case["conf_loss"]), what=f"{b} conf_loss")
        assert_close(alone.scale_loss, _scalar(case["factor_loss"]), what=f"{b} factor_loss")
        assert_close(alone.pr_factor[0], _scalar(case["pr_factor"]), what=f"{b} pr_factor")
        assert_close(alone.gt_factor[0], _scalar(case["gt_factor"]), what=f"{b} gt_factor")
        # In the batch, the per-sample default gives every element its alone values.
        assert batch.per_sample is not None
        want = _scalar(case["conf_loss"] + case["factor_loss"])
        assert_close(batch.per_sample[b], want, what=f"{b} per-sample in batch")
        assert_close(batch.pr_factor[b], _scalar(case["pr_factor"]), what=f"{b} batch pr")
    assert_close(batch.loss, batch.per_sample.mean(), what="batch loss = mean of per-sample")


def test_composed_criterion_equals_training_loss(a7):
    tl = a7["train_loss"]
    pred = step_predictions_from_official(a7["inputs"]["preds_all"])
    criterion = ConfidenceRegression(tl["alpha"], batch_coupled=True) + ScaleLoss(
        batch_coupled=True
    )
    out = criterion(pred, _target(a7))
    assert_close(out.loss, _scalar(tl["total"]), what="composed total")
    assert_close(out.parts["ConfidenceRegression"].loss, _scalar(tl["conf_loss"]))


def _eval_variant(name: str) -> ScaleShiftInvariant:
    if name == "eval_py":  # Regr3D_t_ScaleShiftInv(L21, norm_mode=False, gt_scale=True)
        return ScaleShiftInvariant(norm_mode="none", gt_scale=True, batch_coupled=True)
    # training.py test criterion: class defaults norm_mode='avg_dis', fix_first=True
    return ScaleShiftInvariant(norm_mode="avg_dis", fix_first=True, batch_coupled=True)


@pytest.mark.parametrize("variant", ["eval_py", "training_py_test"])
def test_eval_criterion(a7, variant):
    ref = a7["eval_criterion"][variant]
    preds_all = a7["inputs"]["preds_all"]
    before = [[{k: v.clone() for k, v in r.items()} for r in p] for p in preds_all]
    gt_before = [v["pts3d"].clone() for v in a7["inputs"]["gt"]]
    pred = step_predictions_from_official(preds_all)
    out = _eval_variant(variant)(pred, _target(a7))

    for key, want in ref["monitoring"].items():
        assert_close(out.details[key], _scalar(want), what=f"monitoring {key}")
    frame = ref["frame_loss"]
    assert_close(out.loss, _scalar(frame["loss"]), what="frame loss")
    assert set(out.details) == set(frame["details"])
    for key, want in frame["details"].items():
        assert_close(out.details[key], _scalar(want), what=f"details {key}")
    if ref.get("pr_factor") is None:
        assert out.pr_factor is None
    else:
        assert_close(out.pr_factor, ref["pr_factor"], what="pr_factor")

    eval_py = a7["eval_criterion"]["eval_py"]
    n_steps = len(preds_all)
    for t in range(n_steps + 1):
        assert_close(out.gt_pts3d[:, t], eval_py["gt_pts"][t], what=f"gt_pts[{t}]")
    for i in range(n_steps):
        assert_close(out.pts_view1[:, i], eval_py["pred_pts_l"][i], what=f"pred_pts_l[{i}]")
        assert_close(out.pts_view2[:, i], eval_py["pred_pts_r"][i], what=f"pred_pts_r[{i}]")

    # Unlike the official criterion, nothing is modified in place.
    for p_now, p_then in zip(preds_all, before, strict=True):
        for r_now, r_then in zip(p_now, p_then, strict=True):
            for key in r_then:
                assert torch.equal(r_now[key], r_then[key])
    for v, then in zip(a7["inputs"]["gt"], gt_before, strict=True):
        assert torch.equal(v["pts3d"], then)
