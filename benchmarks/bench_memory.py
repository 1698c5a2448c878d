"""Per-step cost of SpatialMemory over a long stream, beside a naive growing-``torch.cat`` memory.

Each step is one read (``P`` queries against the whole memory) plus one insertion (gate, write,
consolidation), in eval mode with the paper's defaults, on random keys (cosine similarity ~0, so
every frame is inserted: the worst case). The baseline follows the official structure: keys and
values are concatenated with ``torch.cat`` on every insertion, and a top-k + index pruning rebuilds
them when the long-term memory is over budget.

Examples::

    python benchmarks/bench_memory.py                         # P=196 and P=768, C=1024, 10k steps
    python benchmarks/bench_memory.py --steps 500 --P 196     # shorter
    python benchmarks/bench_memory.py --device cuda --json benchmarks/results/memory_cuda.json
"""

import argparse
import json
import logging
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from spatialmem.memory import MemoryConfig, SpatialMemory

logger = logging.getLogger("bench_memory")
RESULTS = Path(__file__).resolve().parent / "results"


class NaiveCatMemory:
    """Official-style memory: growing tensors, ``torch.cat`` per insertion, top-k pruning."""

    def __init__(self, memory: SpatialMemory, num_patches: int) -> None:
        self.m = memory
        self.c = memory.config
        self.p = num_patches
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.age: torch.Tensor | None = None
        self.attn: torch.Tensor | None = None
        self.wm = 0
        self.lm = 0

    def read(self, query: torch.Tensor) -> torch.Tensor:
        assert self.keys is not None and self.values is not None and self.attn is not None
        q = self.m.norm_q(query)
        k = self.m.norm_k(self.keys)
        v = self.m.norm_v(self.values)
        a = torch.softmax(q @ k.transpose(-1, -2) * self.m.scale, dim=-1)
        a = a.masked_fill(a < self.c.attn_clip, 0.0)
        a = a / a.sum(-1, keepdim=True)
        self.attn = self.attn + a.sum(1)
        return a @ v + query

    def update(self, key: torch.Tensor, value: torch.Tensor) -> None:
        b = key.shape[0]
        if self.keys is None:
            self.keys, self.values = key, value
            self.age = torch.zeros(b, self.p, device=key.device)
            self.attn = torch.zeros(b, self.p, device=key.device)
            self.wm = 1
            return
        assert self.values is not None and self.age is not None and self.attn is not None
        frames = self.keys[:, -self.wm * self.p :].reshape(b, self.wm, self.p, -1)
        sim = F.cosine_similarity(frames, key[:, None], dim=-1).mean(-1).max()
        if float(sim) > self.c.sim_thresh:  # host sync, batch-wide decision (official)
            return
        self.keys = torch.cat([self.keys, key], dim=1)
        self.values = torch.cat([self.values, value], dim=1)
        self.age = torch.cat([self.age + 1, torch.zeros(b, self.p, device=key.device)], dim=1)
        self.attn = torch.cat([self.attn, torch.zeros(b, self.p, device=key.device)], dim=1)
        self.wm += 1
        if self.wm > self.c.work_mem_frames:
            self.wm = self.c.work_mem_frames
            self.lm += self.p
        if self.lm > self.c.long_mem_tokens:
            w = self.attn / self.age.clamp(min=1)
            w = torch.where(self.age < self.c.resolved_protect_age, torch.full_like(w, 1e8), w)
            idx = w.topk(self.c.resolved_top_k, dim=1).indices
            self.keys = self.keys.gather(1, idx[..., None].expand(-1, -1, self.keys.shape[2]))
            self.values = self.values.gather(1, idx[..., None].expand(-1, -1, self.values.shape[2]))
            self.age = self.age.gather(1, idx)
            self.attn = self.attn.gather(1, idx)
            self.lm = self.c.resolved_top_k - self.wm * self.p

    def snapshot(self) -> tuple:
        ts = (self.keys, self.values, self.age, self.attn)
        return (*(t.clone() for t in ts if t is not None), self.wm, self.lm)

    def restore(self, snap: tuple) -> None:
        self.keys, self.values, self.age, self.attn = (t.clone() for t in snap[:4])
        self.wm, self.lm = snap[4], snap[5]

    def nbytes(self) -> int:
        ts = (self.keys, self.values, self.age, self.attn)
        return sum(t.numel() * t.element_size() for t in ts if t is not None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pool(n: int, b: int, p: int, c: int, device: torch.device, seed: int) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randn(b, p, c, generator=g).to(device) for _ in range(3)) for _ in range(n)]


def run_stream(
    step: Callable[[int, tuple], None],
    pool: list[tuple],
    steps: int,
    device: torch.device,
    snapshot: Callable[[], Any] | None = None,
    snapshot_at: tuple[int, ...] = (),
) -> tuple[list[float], dict[int, Any]]:
    """Seconds of every step (read + update), synchronised on CUDA, and snapshots of the memory
    taken before the steps listed in ``snapshot_at``."""
    times = []
    snaps: dict[int, Any] = {}
    for t in range(steps):
        if snapshot is not None and t in snapshot_at:
            snaps[t] = snapshot()
        data = pool[t % len(pool)]
        _sync(device)
        t0 = time.perf_counter()
        step(t, data)
        _sync(device)
        times.append(time.perf_counter() - t0)
        if (t + 1) % max(1, steps // 10) == 0:
            logger.info("  step %d/%d: %.2f ms", t + 1, steps, 1e3 * times[-1])
    return times, snaps


def paired_ratio(
    step: Callable[[int, tuple], None],
    restore: Callable[[Any], None],
    snaps: tuple[tuple[int, Any], tuple[int, Any]],
    pool: list[tuple],
    device: torch.device,
    window: int,
    reps: int,
) -> float:
    """Median over ``reps`` alternating trials of (time of ``window`` steps resumed from the late
    snapshot) / (the same from the early snapshot). Alternating the two cancels slow drifts of a
    shared machine's speed, which dominate a comparison of two windows minutes apart."""
    ratios = []
    for _ in range(reps):
        spent = []
        for t0, snap in snaps:
            restore(snap)
            _sync(device)
            start = time.perf_counter()
            for t in range(t0, t0 + window):
                step(t, pool[t % len(pool)])
            _sync(device)
            spent.append(time.perf_counter() - start)
        ratios.append(spent[1] / spent[0])
    return statistics.median(ratios)


def summarise(times: list[float], at: int, window: int) -> float:
    """Median step time (ms) over ``window`` steps centred on step ``at`` (clamped to the run)."""
    lo = max(0, min(at - window // 2, len(times) - window))
    return 1e3 * statistics.median(times[lo : lo + window])


def bench_one(args: argparse.Namespace, p: int, device: torch.device) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    config = MemoryConfig(dim=args.C, work_mem_frames=args.work_mem, long_mem_tokens=args.long_mem)
    memory = SpatialMemory(config).to(device).eval()
    pool = _pool(args.pool, args.B, p, args.C, device, seed=p)
    rows = []

    state = memory.init_state(args.B, p)

    def ours(t: int, data: tuple) -> None:
        nonlocal state
        q, k, v = data
        if t > 0:
            _, state = memory.read(state, q)
        state = memory.update(state, k, v)

    def ours_restore(snap: Any) -> None:
        nonlocal state
        state = snap.clone()

    naive = NaiveCatMemory(memory, p)

    def baseline(t: int, data: tuple) -> None:
        q, k, v = data
        if t > 0:
            naive.read(q)
        naive.update(k, v)

    impls = (
        ("spatialmem", ours, lambda: state.clone(), ours_restore, args.steps),
        ("naive torch.cat", baseline, naive.snapshot, naive.restore, args.baseline_steps),
    )
    for name, fn, snapshot, restore, steps in impls:
        if steps <= 0:
            continue
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        logger.info("%s, P=%d, C=%d, %d steps", name, p, args.C, steps)
        early_at = max(1, min(50, steps - args.window) - args.window // 2)
        late_at = max(early_at, steps - args.window)
        with torch.inference_mode():
            times, snaps = run_stream(fn, pool, steps, device, snapshot, (early_at, late_at))
            paired = (
                paired_ratio(fn, restore, ((early_at, snaps[early_at]), (late_at, snaps[late_at])),
                             pool, device, args.window, args.reps)
                if args.reps > 0 and late_at > early_at
                else float("nan")
            )  # fmt: skip
            final_snap = snaps[late_at]
        early = summarise(times, 50, args.window)
        late = summarise(times, steps, args.window)
        with torch.inference_mode():
            restore(final_snap)
            for t in range(late_at, steps):  # the state at the end of the stream
                fn(t, pool[t % len(pool)])
        if fn is ours:
            nbytes = sum(
                t.numel() * t.element_size()
                for t in state.state_dict().values()
                if isinstance(t, torch.Tensor)
            )
            tokens = int(state.count[0])
        else:
            nbytes = naive.nbytes()
            tokens = int(naive.keys.shape[1])  # type: ignore[union-attr]
        rows.append(
            {
                "impl": name,
                "P": p,
                "C": args.C,
                "B": args.B,
                "steps": steps,
                "ms_step_50": early,
                "ms_step_last": late,
                "ratio_last_over_50": late / early,
                "paired_ratio_last_over_50": paired,
                "ms_mean": 1e3 * statistics.fmean(times),
                "ms_max": 1e3 * max(times),
                "memory_bytes": nbytes,
                "tokens_at_end": tokens,
                "peak_cuda_bytes": torch.cuda.max_memory_allocated(device)
                if device.type == "cuda"
                else None,
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| impl | P | C | steps | ms/step @50 | ms/step @last | last/50 | last/50 paired "
        "| mean ms | max ms | memory MiB | tokens |\n" + "|---" * 12 + "|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['impl']} | {r['P']} | {r['C']} | {r['steps']} | {r['ms_step_50']:.2f} | "
            f"{r['ms_step_last']:.2f} | {r['ratio_last_over_50']:.2f} | "
            f"{r['paired_ratio_last_over_50']:.2f} | {r['ms_mean']:.2f} | "
            f"{r['ms_max']:.2f} | {r['memory_bytes'] / 2**20:.1f} | {r['tokens_at_end']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--full",
        action="store_true",
        help="the long run behind the docs page: 10,000 steps, P = 196 and 768, 5 paired trials "
        "(default: the quick run, 300 steps at P = 196, no paired trials)",
    )
    ap.add_argument("--steps", type=int, default=None, help="stream length for spatialmem")
    ap.add_argument(
        "--baseline-steps",
        type=int,
        default=None,
        help="stream length for the baseline (default: --steps; 0 skips it)",
    )
    ap.add_argument(
        "--P",
        type=int,
        nargs="+",
        default=None,
        help="tokens per frame (224x224 -> 196, 512x384 -> 768)",
    )
    ap.add_argument("--C", type=int, default=1024, help="key/value width")
    ap.add_argument("--B", type=int, default=1, help="batch size")
    ap.add_argument("--long-mem", type=int, default=4000, help="long-term token budget")
    ap.add_argument("--work-mem", type=int, default=5, help="working-memory frames")
    ap.add_argument("--window", type=int, default=50, help="steps per timing window")
    ap.add_argument(
        "--reps", type=int, default=None, help="alternating trials of the paired ratio (0: skip)"
    )
    ap.add_argument("--pool", type=int, default=16, help="distinct random frames cycled through")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None, help="output JSON")
    args = ap.parse_args(argv)
    if args.steps is None:
        args.steps = 10_000 if args.full else 300
    if args.P is None:
        args.P = [196, 768] if args.full else [196]
    if args.reps is None:
        args.reps = 5 if args.full else 0
    if args.json is None:
        args.json = RESULTS / ("bench_memory.json" if args.full else "bench_memory_quick.json")
    if args.baseline_steps is None:
        args.baseline_steps = args.steps
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for p in args.P:
        rows.extend(bench_one(args, p, device))
    text = table(rows)
    print(text)
    env = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"env": env, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2
        )
    )
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
