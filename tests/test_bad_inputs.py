"""Every public entry point answers a bad input with a clear error that names the argument.

One table of cases (entry point, bad input, exception type, message pattern), run with jaxtyping's
runtime checks off (``without_typecheck``) so the library's own checks are what is tested. The
guide ``docs/guides/errors.md`` lists the same cases.
"""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spatialmem as sm
from spatialmem.geometry import points_in_camera, umeyama
from spatialmem.inference import OnlineReconstructor, offline_reconstruction, pair_scores
from spatialmem.interop import CheckpointError
from spatialmem.losses import ConfidenceRegression, PointRegression, Spann3RLoss
from spatialmem.metrics import chamfer_distance, evaluate_pointmaps
from spatialmem.types import SequenceTarget, StepPredictions

pytestmark = pytest.mark.usefixtures("without_typecheck")

P = 16  # patch size of the tiny models
NAN = float("nan")


@pytest.fixture(scope="module")
def dust3r() -> sm.DUSt3R:
    torch.manual_seed(0)
    return sm.create_model("dust3r_tiny_linear").eval()


@pytest.fixture(scope="module")
def spann3r() -> sm.Spann3R:
    torch.manual_seed(0)
    return sm.create_model("spann3r_tiny").eval()


def _img(
    *shape: int, fill: float | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(*shape, generator=g) * 2 - 1
    if fill is not None:
        x.view(-1)[0] = fill
    return x.to(dtype)


def _loss_inputs(
    *, pts: float = 0.0, gt: float = 0.0, conf: float = 2.0, pose: torch.Tensor | None = None
) -> tuple[StepPredictions, SequenceTarget]:
    b, s, h, w = 1, 1, 2, 2
    g = torch.Generator().manual_seed(0)
    pts_l = torch.rand(b, s, h, w, 3, generator=g) + 1
    pts_l[0, 0, 0, 0, 0] += pts
    conf_l = torch.full((b, s, h, w), 2.0)
    conf_l[0, 0, 0, 0] = conf
    world = torch.rand(b, s + 1, h, w, 3, generator=g) + 1
    world[0, 0, 0, 0, 0] += gt
    pred = StepPredictions(pts_l, conf_l, pts_l.clone(), torch.full((b, s, h, w), 2.0))
    pose = torch.eye(4)[None] if pose is None else pose
    return pred, SequenceTarget(world, torch.ones(b, s + 1, h, w, dtype=torch.bool), pose)


def _ckpt(tmp_path: Path, content: bytes | None) -> Path:
    path = tmp_path / "model.pth"
    if content is not None:
        path.write_bytes(content)
    return path


def _stream_training() -> None:
    model = sm.create_model("spann3r_tiny")  # training mode (a fresh module)
    OnlineReconstructor(model).step(_img(3, P, P))


# (id, call(models, tmp_path), exception type, regex the message must match)
Case = tuple[str, Callable[..., object], type[Exception], str]
CASES: list[Case] = [
    # ---- DUSt3R.forward
    (
        "dust3r-rank",
        lambda d, s, t: d(_img(3, P, P), _img(1, 3, P, P)),
        ValueError,
        "`img1`.*4 dim",
    ),
    (
        "dust3r-channels",
        lambda d, s, t: d(_img(1, 4, P, P), _img(1, 3, P, P)),
        ValueError,
        "`img1`",
    ),
    (
        "dust3r-patch",
        lambda d, s, t: d(_img(1, 3, P, P), _img(1, 3, P + 3, P)),
        ValueError,
        "`img2`.*multiples of the patch size",
    ),
    (
        "dust3r-nan",
        lambda d, s, t: d(_img(1, 3, P, P, fill=NAN), _img(1, 3, P, P)),
        ValueError,
        "`img1` contains 1 NaN",
    ),
    (
        "dust3r-0-255",
        lambda d, s, t: d(_img(1, 3, P, P) * 127 + 128, _img(1, 3, P, P)),
        ValueError,
        r"`img1` holds values in .*to_model_range",
    ),
    (
        "dust3r-int",
        lambda d, s, t: d(torch.zeros(1, 3, P, P, dtype=torch.uint8), _img(1, 3, P, P)),
        TypeError,
        "`img1` must have a floating dtype",
    ),
    (
        "dust3r-batch",
        lambda d, s, t: d(_img(1, 3, P, P), _img(2, 3, P, P)),
        ValueError,
        "same batch size.*`img1`",
    ),
    (
        "dust3r-device",
        lambda d, s, t: d(_img(1, 3, P, P).to("meta"), _img(1, 3, P, P)),
        ValueError,
        "`img1` is on device meta but the model's parameters are on cpu",
    ),
    # ---- Spann3R
    ("spann3r-rank", lambda d, s, t: s(_img(1, 3, P, P)), ValueError, "`frames` must have 5"),
    ("spann3r-one-frame", lambda d, s, t: s(_img(1, 1, 3, P, P)), ValueError, "`frames`.*T >= 2"),
    ("spann3r-nan", lambda d, s, t: s(_img(1, 2, 3, P, P, fill=NAN)), ValueError, "`frames`.*NaN"),
    (
        "spann3r-0-255",
        lambda d, s, t: s(_img(1, 2, 3, P, P).abs() * 255),
        ValueError,
        "`frames` holds values",
    ),
    (
        "spann3r-device",
        lambda d, s, t: s(_img(1, 2, 3, P, P).to("meta")),
        ValueError,
        "`frames` is on device meta",
    ),
    (
        "spann3r-encode-pair-batch",
        lambda d, s, t: s.encode_pair(_img(1, 3, P, P), _img(2, 3, P, P)),
        ValueError,
        "same batch size.*`img1`",
    ),
    (
        "create-model-option",
        lambda d, s, t: sm.create_model("spann3r_tiny", option=1),
        TypeError,
        r"unknown option.*\['option'\].*mem_enc_depth.*enc_depth",
    ),
    (
        "create-model-name",
        lambda d, s, t: sm.create_model("spann3r_huge"),
        ValueError,
        "unknown model 'spann3r_huge'",
    ),
    (
        "memory-policy",
        lambda d, s, t: sm.create_model("spann3r_tiny", memory=42),
        TypeError,
        "`memory` must be",
    ),
    # ---- OnlineReconstructor
    ("online-rank", lambda d, s, t: OnlineReconstructor(s).step(_img(P, P)), ValueError, "`frame`"),
    (
        "online-patch",
        lambda d, s, t: OnlineReconstructor(s).step(_img(3, P, P + 1)),
        ValueError,
        "`frame` height and width",
    ),
    (
        "online-nan",
        lambda d, s, t: OnlineReconstructor(s).step(_img(3, P, P, fill=NAN)),
        ValueError,
        "`frame` contains",
    ),
    (
        "online-0-255",
        lambda d, s, t: OnlineReconstructor(s).step(_img(3, P, P) * 100),
        ValueError,
        "`frame` holds values",
    ),
    (
        "online-int",
        lambda d, s, t: OnlineReconstructor(s).step(torch.zeros(3, P, P, dtype=torch.int32)),
        TypeError,
        "`frame` must have a floating dtype",
    ),
    (
        "online-device",
        lambda d, s, t: OnlineReconstructor(s).step(_img(3, P, P).to("meta")),
        ValueError,
        "`frame` is on device meta but the model's parameters are on cpu",
    ),
    (
        "online-empty-run",
        lambda d, s, t: OnlineReconstructor(s).run([]),
        ValueError,
        "`frames` is empty",
    ),
    ("online-training", lambda d, s, t: _stream_training(), ValueError, "training mode"),
    # ---- offline
    (
        "offline-one-frame",
        lambda d, s, t: offline_reconstruction(s, _img(1, 3, P, P)),
        ValueError,
        "`frames`.*N >= 2",
    ),
    (
        "offline-0-255",
        lambda d, s, t: offline_reconstruction(s, _img(2, 3, P, P) * 50),
        ValueError,
        "`frames` holds values",
    ),
    (
        "offline-device",
        lambda d, s, t: offline_reconstruction(s, _img(2, 3, P, P).to("meta")),
        ValueError,
        "`frames` is on device meta",
    ),
    (
        "pair-scores-nan",
        lambda d, s, t: pair_scores(d, _img(2, 3, P, P, fill=NAN)),
        ValueError,
        "`frames` contains",
    ),
    (
        "pair-scores-model",
        lambda d, s, t: pair_scores(s, _img(2, 3, P, P)),
        TypeError,
        "`pair_model` must be a DUSt3R",
    ),
    # ---- memory
    (
        "memory-update-nan",
        lambda d, s, t: s.memory.update(
            s.memory.init_state(1, 4), _img(1, 4, 64, fill=NAN), _img(1, 4, 64)
        ),
        ValueError,
        "`key` contains 1 NaN",
    ),
    (
        "memory-write-nan",
        lambda d, s, t: s.memory.write(
            s.memory.init_state(1, 4), _img(1, 4, 64), _img(1, 4, 64, fill=NAN)
        ),
        ValueError,
        "`value` contains 1 NaN",
    ),
    (
        "memory-read-nan",
        lambda d, s, t: s.memory.read(s.memory.init_state(1, 4), _img(1, 4, 64, fill=NAN)),
        ValueError,
        "`query` contains",
    ),
    (
        "memory-width",
        lambda d, s, t: s.memory.read(s.memory.init_state(1, 4), _img(1, 4, 8)),
        ValueError,
        "`query` must have size 64",
    ),
    (
        "memory-batch",
        lambda d, s, t: s.memory.read(s.memory.init_state(2, 4), _img(1, 4, 64)),
        ValueError,
        "same batch size",
    ),
    # ---- losses
    (
        "loss-nan-pred",
        lambda d, s, t: Spann3RLoss()(*_loss_inputs(pts=NAN)),
        ValueError,
        r"`StepPredictions.pts_view1` holds NaN/Inf at 1 valid pixel",
    ),
    (
        "loss-nan-gt",
        lambda d, s, t: PointRegression()(*_loss_inputs(gt=NAN)),
        ValueError,
        r"`SequenceTarget.pts3d` holds NaN/Inf",
    ),
    (
        "loss-conf-below-1",
        lambda d, s, t: ConfidenceRegression()(*_loss_inputs(conf=0.0)),
        ValueError,
        r"`StepPredictions.conf_view1` must be >= 1",
    ),
    (
        "loss-singular-pose",
        lambda d, s, t: Spann3RLoss()(*_loss_inputs(pose=torch.zeros(1, 4, 4))),
        ValueError,
        r"`SequenceTarget.camera_pose0` must be rigid",
    ),
    (
        "loss-mismatch",
        lambda d, s, t: Spann3RLoss()(
            _loss_inputs()[0],
            SequenceTarget(
                torch.zeros(1, 3, 2, 2, 3),
                torch.ones(1, 3, 2, 2, dtype=torch.bool),
                torch.eye(4)[None],
            ),
        ),
        ValueError,
        "predictions and target do not match",
    ),
    # ---- geometry / metrics
    (
        "points-in-camera-scaled",
        lambda d, s, t: points_in_camera(
            torch.zeros(1, 5, 3), torch.diag(torch.tensor([2.0, 2, 2, 1]))[None]
        ),
        ValueError,
        "`cam_to_world` must be rigid",
    ),
    (
        "umeyama-shape",
        lambda d, s, t: umeyama(torch.zeros(1, 5, 2), torch.zeros(1, 5, 3)),
        ValueError,
        "`src` must have size 3",
    ),
    (
        "umeyama-nan",
        lambda d, s, t: umeyama(_img(1, 5, 3, fill=NAN), _img(1, 5, 3)),
        ValueError,
        "`src` holds NaN/Inf",
    ),
    (
        "chamfer-rank",
        lambda d, s, t: chamfer_distance(torch.zeros(1, 5, 3), torch.zeros(5, 3)),
        ValueError,
        "`pred` must have 2 dimensions",
    ),
    (
        "evaluate-pointmaps-shape",
        lambda d, s, t: evaluate_pointmaps(torch.zeros(1, 4, 4, 3), torch.zeros(1, 4, 4, 2)),
        ValueError,
        "`gt` must have the shape",
    ),
    # ---- checkpoints
    (
        "checkpoint-missing",
        lambda d, s, t: sm.load_checkpoint(d, _ckpt(t, None)),
        FileNotFoundError,
        "checkpoint file not found",
    ),
    (
        "checkpoint-empty",
        lambda d, s, t: sm.load_checkpoint(d, _ckpt(t, b"")),
        CheckpointError,
        "the file is empty",
    ),
    (
        "checkpoint-text",
        lambda d, s, t: sm.load_checkpoint(d, _ckpt(t, b"hello text\n")),
        CheckpointError,
        "model.pth is not a readable PyTorch checkpoint",
    ),
]


@pytest.mark.parametrize(
    ("call", "exc", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_gets_a_clear_error(
    call: Callable[..., object],
    exc: type[Exception],
    pattern: str,
    dust3r: sm.DUSt3R,
    spann3r: sm.Spann3R,
    tmp_path: Path,
) -> None:
    with pytest.raises(exc, match=pattern):
        call(dust3r, spann3r, tmp_path)


def test_value_checks_off_lets_out_of_range_pixels_through(dust3r: sm.DUSt3R) -> None:
    with sm.value_checks(False):
        dust3r(_img(1, 3, P, P) * 255, _img(1, 3, P, P))


def test_pixel_values_up_to_the_limit_are_accepted(dust3r: sm.DUSt3R) -> None:
    x = _img(1, 3, P, P) * 4  # e.g. augmented or standardised inputs, beyond [-1, 1]
    dust3r(x, x)


# ---------------------------------------------------------------- generated shapes and dtypes
_FLOATS = st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64])
_INTS = st.sampled_from([torch.uint8, torch.int32, torch.int64, torch.bool])


@settings(max_examples=12)
@given(h=st.integers(1, 3 * P), w=st.integers(1, 3 * P), dtype=_FLOATS)
def test_generated_sizes_off_the_patch_grid_are_refused(
    dust3r: sm.DUSt3R, h: int, w: int, dtype: torch.dtype
) -> None:
    x = torch.zeros(1, 3, h, w, dtype=dtype)
    if h % P == 0 and w % P == 0:
        assert dust3r(x, x).view1.pts3d.dtype == torch.float32  # cast to the parameters' dtype
    else:
        with pytest.raises(ValueError, match="`img1` height and width must be positive multiples"):
            dust3r(x, x)


@settings(max_examples=8)
@given(dtype=_INTS, ndim=st.integers(2, 5))
def test_generated_integer_frames_are_refused(
    spann3r: sm.Spann3R, dtype: torch.dtype, ndim: int
) -> None:
    x = (
        torch.zeros((1,) * (ndim - 3) + (3, P, P), dtype=dtype)
        if ndim >= 3
        else torch.zeros(P, P, dtype=dtype)
    )
    with pytest.raises(TypeError, match="`frame` must have a floating dtype"):
        OnlineReconstructor(spann3r).step(x)


# ---------------------------------------------------------------- dtype casting (documented)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_floating_frames_are_cast_to_the_model_dtype(
    dust3r: sm.DUSt3R, spann3r: sm.Spann3R, dtype: torch.dtype
) -> None:
    x32 = _img(2, 3, P, P)
    x = x32.to(dtype)
    want = dust3r(x.float()[:1], x.float()[1:])
    got = dust3r(x[:1], x[1:])
    assert got.view1.pts3d.dtype == torch.float32
    torch.testing.assert_close(got.view1.pts3d, want.view1.pts3d)
    seq = spann3r(x[None])
    assert seq.pts3d.dtype == torch.float32
    torch.testing.assert_close(seq.pts3d, spann3r(x.float()[None]).pts3d)
    results = OnlineReconstructor(spann3r).run(list(x))
    torch.testing.assert_close(torch.stack([r.pts3d for r in results])[None], seq.pts3d)
    assert pair_scores(dust3r, x).dtype == torch.float32
    assert offline_reconstruction(spann3r, x).reconstruction.pts3d.dtype == torch.float32


def test_float64_model_takes_float32_frames(dust3r: sm.DUSt3R) -> None:
    model = sm.create_model("dust3r_tiny_linear").eval().double()
    x = _img(1, 3, P, P)
    assert model(x, x).view1.pts3d.dtype == torch.float64
