"""Fixtures A3, A4, A5: the Spann3R model reproduces the official run end to end.

The model is rebuilt with ``build_official`` and run on the fixture frames; every frame's points
and confidences, the per-step intermediates (fused tokens, keys, queries, memory values) and the
memory log (gate decisions, token counts, working/long-term bookkeeping, clipped entries, pruning)
are compared. A recording :class:`SpatialMemory` subclass captures what the memory did, which is
also a check that the model accepts a memory subclass unchanged.
"""

from typing import Any

import pytest
import torch

from conftest import assert_close, load_fixture
from spatialmem.interop import build_official, official_keymap, sequence_target_from_official
from spatialmem.losses import Spann3RLoss
from spatialmem.memory import MemoryState, SpatialMemory
from spatialmem.models import PairStep, Spann3R

FIXTURES = {
    "A3": "spann3r_tiny_eval.pt",
    "A4": "spann3r_tiny_prune.pt",
    "A5": "spann3r_tiny_train.pt",
}


class RecordingMemory(SpatialMemory):
    """Keeps what every read and update did (a policy-free subclass)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[torch.Tensor] = []
        self.updates: list[tuple[MemoryState, MemoryState]] = []

    def read(self, state, query):
        self.reads.append(self.attention_weights(state, query))
        return super().read(state, query)

    def update(self, state, key, value):
        before = state.clone()
        after = super().update(state, key, value)
        self.updates.append((before, after.clone()))
        return after


def _model(fx: dict[str, Any]) -> Spann3R:
    model = build_official("spann3r", fx["config"], fx["state_dict"])
    assert isinstance(model, Spann3R) and not model.training
    recording = RecordingMemory(model.memory.config)
    recording.load_state_dict(model.memory.state_dict())
    model.memory = recording
    return model.train(bool(fx["config"]["run"]["training"]))


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def run(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], Spann3R, Any, list]:
    fx = load_fixture(FIXTURES[request.param])
    model = _model(fx)
    frames = torch.stack(fx["inputs"]["img"], dim=1)
    with torch.no_grad():
        out = model(frames)
        # The same steps driven by hand through the public building blocks.
        steps: list[PairStep] = []
        view1, view2 = model.encode_pair(frames[:, 0], frames[:, 1])
        state = model.init_state(frames.shape[0], view1)
        query = None
        for i in range(frames.shape[1] - 1):
            if i > 0:
                view1, view2 = view2, model.encode(frames[:, i + 1])
            step, state = model.step(state, view1, view2, query)
            steps.append(step)
            query = step.query
    return request.param, fx, model, out, steps


def test_every_frame_matches_the_official_preds(run) -> None:
    name, fx, _, out, _ = run
    preds = fx["outputs"]["preds"]
    assert out.pts3d.shape[1] == len(preds)
    for t, (pred, key) in enumerate(zip(preds, fx["outputs"]["pred_pts_keys"], strict=True)):
        assert key == ("pts3d" if t == 0 else "pts3d_in_other_view")
        assert_close(out.pts3d[:, t], pred[key], what=f"{name} frame {t} pts3d")
        assert_close(out.conf[:, t], pred["conf"], what=f"{name} frame {t} conf")


def test_preds_all_of_every_step(run) -> None:
    name, fx, _, _, steps = run
    if "preds_all" not in fx["outputs"]:
        pytest.skip(f"{name} stores no preds_all")
    for i, ((res1, res2), step) in enumerate(zip(fx["outputs"]["preds_all"], steps, strict=True)):
        key1 = "pts3d" if i == 0 else "pts3d_in_other_view"
        assert_close(step.view1.pts3d, res1[key1], what=f"step {i} view 1")
        assert_close(step.view2.pts3d, res2["pts3d_in_other_view"], what=f"step {i} view 2")
        assert_close(step.view2.conf, res2["conf"], what=f"step {i} view 2 conf")


def test_training_mode_returns_the_step_predictions(run) -> None:
    name, fx, _, out, steps = run
    if not fx["config"]["run"]["training"]:
        assert out.steps is None
        return
    assert out.steps is not None
    for i, step in enumerate(steps):
        assert_close(out.steps.pts_view1[:, i], step.view1.pts3d, what=f"{name} left {i}")
        assert_close(out.steps.pts_view2[:, i], step.view2.pts3d, what=f"{name} right {i}")
        assert_close(out.steps.conf_view2[:, i], step.view2.conf, what=f"{name} conf {i}")


def test_first_step_intermediates(run) -> None:
    name, fx, model, _, steps = run
    it = fx["intermediates"]
    frames = torch.stack(fx["inputs"]["img"], dim=1)
    with torch.no_grad():
        view1, view2 = model.encode_pair(frames[:, 0], frames[:, 1])
        dec1, dec2 = model.dust3r.decode(view1, view2)
        pts_tokens, _ = model.memory_encoder.patch_embed(steps[0].view1.pts3d.permute(0, 3, 1, 2))
    assert_close(view1.tokens, it["frame0_enc_tokens"], what="frame 0 tokens")
    assert_close(view2.tokens, it["frame1_enc_tokens"], what="frame 1 tokens")
    assert torch.equal(view1.positions, it["frame0_pos"])
    for got, want, what in ((dec1, it["step0_dec1"], "dec1"), (dec2, it["step0_dec2"], "dec2")):
        assert len(got) == len(want)
        for j, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, what=f"{name} step 0 {what}[{j}]")
    assert_close(pts_tokens, it["step0_value_patch_tokens"], what="value patch tokens")
    first = it["first_insert"]
    assert_close(steps[0].key, first["key"], what="first key")
    assert_close(steps[0].value, first["value"], what="first value")


def test_per_step_keys_queries_values(run) -> None:
    name, fx, _, _, steps = run
    for i, (log, step) in enumerate(zip(fx["intermediates"]["per_step"], steps, strict=True)):
        assert_close(step.fused, log["feat_fuse"], what=f"{name} step {i} fused")
        assert_close(step.key, log["feat_k1"], what=f"{name} step {i} key")
        assert_close(step.query, log["feat_k2"], what=f"{name} step {i} query")
        assert_close(step.value - step.key, log["cur_v"], what=f"{name} step {i} cur_v")


def test_memory_log(run) -> None:
    """Gate, counts and bookkeeping of every insertion; clipped entries of every read."""
    name, fx, model, out, _ = run
    memory: RecordingMemory = model.memory  # type: ignore[assignment]
    log = fx["memory"]
    # forward() and the hand-driven loop each ran once through the recording memory.
    n_steps = len(log["steps"])
    updates = memory.updates[:n_steps]
    for i, (entry, (before, after)) in enumerate(zip(log["steps"], updates, strict=True)):
        assert before.count.tolist() == [entry["tokens_before"]] * before.batch_size, i
        assert after.count.tolist() == [entry["tokens_after"]] * after.batch_size, i
        inserted = bool((after.count > before.count).any()) or entry["pruned"]
        assert inserted == entry["inserted"], f"{name} step {i} insertion"
        if not model.training:
            assert after.work_frames.tolist() == [entry["wm_after"]] * after.batch_size
            assert after.long_tokens.tolist() == [entry["lm_after"]] * after.batch_size
        # Row order differs after a prune (ours stays chronological): compare as multisets.
        x = entry["tokens_after"]
        for field, want in (("age", entry["mem_count_after"]), ("attn", entry["mem_attn_after"])):
            got = getattr(after, field)[:, :x].to(want.dtype)
            assert_close(got.sort(dim=-1).values, want.sort(dim=-1).values, 1e-5, field)
    reads = memory.reads[: len(log["reads"])]
    for entry, weights in zip(log["reads"], reads, strict=True):
        x = entry["n_tokens"]
        assert int((weights[..., :x] == 0).sum()) == entry["n_clipped"], entry["step"]
        if not log["prunes"] or entry["step"] <= log["prunes"][0]["step"]:
            assert_close(weights[..., :x], entry["attn"], 1e-5, f"read at step {entry['step']}")
    assert out.memory.count.tolist() == [log["final"]["mem_k"].shape[1]] * out.memory.batch_size


def test_forward_equals_the_hand_driven_steps(run) -> None:
    _, _, _, out, steps = run
    for t, step in enumerate(steps):
        assert torch.equal(out.pts3d[:, t], step.view1.pts3d)
    assert torch.equal(out.pts3d[:, -1], steps[-1].view2.pts3d)


def test_end_to_end_parameter_gradients_match_the_official_training_step() -> None:
    """A7 ``param_grad``: A5's model in training mode, the official loss backpropagated through
    the whole model (memory read included): every parameter's gradient norm and the total."""
    a5, a7 = load_fixture(FIXTURES["A5"]), load_fixture("spann3r_tiny_loss.pt")
    want = a7["train_loss"]["param_grad"]
    model = build_official("spann3r", a5["config"], a5["state_dict"]).train()
    frames = torch.stack(a5["inputs"]["img"], dim=1)
    out = model(frames)
    criterion = Spann3RLoss(alpha=a7["train_loss"]["alpha"], batch_coupled=True)
    loss = criterion(out.steps, sequence_target_from_official(a7["inputs"]["gt"])).loss
    assert_close(loss, torch.as_tensor(float(a7["train_loss"]["total"])), what="total loss")
    loss.backward()
    # Official names (aliases included) of every parameter.
    params = dict(model.named_parameters())
    keymap = official_keymap(model)
    ours_to_official = {off: ours for ours in params for off in keymap.to_official(ours)}
    no_grad = sorted(off for off, ours in ours_to_official.items() if params[ours].grad is None)
    assert no_grad == sorted(want["params_without_grad"])
    for off, norm in want["per_param_norm"].items():
        got = params[ours_to_official[off]].grad
        assert got is not None, off
        assert_close(got.norm(), torch.as_tensor(norm), 1e-3, f"grad norm of {off}")
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    assert_close(total, torch.as_tensor(want["total_norm"]), 1e-3, "total gradient norm")
