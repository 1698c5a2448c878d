"""Where the graphed CUDA step of the published model spends its time (needs a CUDA GPU).

Times, in alternating rounds of one run, the streaming step with ``backend="cuda_graph"`` in
bf16 and float32, each with the spatial memory graphed (the default) and eager between the
graphed blocks, and bf16 with its weights cast by autocast on every call instead of once. Then
how long the host takes to queue a step against how long the step takes, and a
``torch.profiler`` table of the bf16 step's kernels. The figures in the performance guide's GPU
section come from this script::

    python benchmarks/profile_cuda_step.py
"""

import argparse
import statistics
import time

import torch

import spatialmem as sm
from spatialmem.optimize import optimize_for_inference
from spatialmem.optimize.core import _GRAPHED_MEMORY_METHODS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="spann3r_vitl_dpt512")
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per variant and round")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device")
    torch.manual_seed(0)
    device = torch.device("cuda")
    with device:
        model = sm.create_model(args.model).eval()
    g = torch.Generator().manual_seed(1)
    pool = [(torch.rand(1, 3, *args.size, generator=g) * 2 - 1).to(device) for _ in range(4)]
    patch = model.config.dust3r.patch_size
    tokens = (args.size[0] // patch) * (args.size[1] // patch)
    nets = {}
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):

        def graphed(dtype: torch.dtype = dtype) -> torch.nn.Module:
            return optimize_for_inference(model, dtype=dtype, backend="cuda_graph", tokens=tokens)

        nets[f"{name} graphs + memory"] = graphed()
        eager_memory = graphed()
        for method in _GRAPHED_MEMORY_METHODS:
            delattr(eager_memory.memory, method)  # the class's eager methods again
        nets[f"{name} graphs, memory eager"] = eager_memory
        if dtype == torch.bfloat16:  # the float32 weights back: autocast casts them per call
            per_call = graphed()
            for layer_name in per_call.inference_plan.cast:
                layer, source = per_call.get_submodule(layer_name), model.get_submodule(layer_name)
                layer.weight, layer.bias = source.weight, source.bias
            nets[f"{name} graphs + memory, weights cast per call"] = per_call
    recons = {k: sm.inference.OnlineReconstructor(v, optimize=False) for k, v in nets.items()}
    position = dict.fromkeys(recons, 0)

    def step(name: str) -> None:
        i = position[name]
        position[name] = i + 1
        recons[name].step(pool[i % len(pool)])

    with torch.inference_mode(), sm.value_checks(False):
        for name in recons:  # first steps: pair encoding, graph recording
            for _ in range(6):
                step(name)
        times: dict[str, list[float]] = {k: [] for k in recons}
        for r in range(args.rounds):
            for name in list(recons) if r % 2 == 0 else list(reversed(recons)):
                for _ in range(args.steps):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    step(name)
                    torch.cuda.synchronize()
                    times[name].append(time.perf_counter() - t0)
        print("| variant | ms/step median | ms/step min | frames/s | host queues (ms/step) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, values in times.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(10):
                step(name)
            queued = (time.perf_counter() - t0) / 10
            torch.cuda.synchronize()
            med = statistics.median(values)
            print(
                f"| {name} | {1e3 * med:.2f} | {1e3 * min(values):.2f} | {1 / med:.1f} "
                f"| {1e3 * queued:.2f} |"
            )
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                step("bf16 graphs + memory")
            torch.cuda.synchronize()
    print("\nbf16 graphs + memory, 10 steps:")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25))


if __name__ == "__main__":
    main()
