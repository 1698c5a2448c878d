"""The guide "Writing your own memory policy" runs, and its two subclasses behave as described."""

import re
from pathlib import Path

import torch

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "memory-policies.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_guide_examples_run_and_behave() -> None:
    blocks = BLOCK.findall(GUIDE.read_text())
    assert len(blocks) >= 3
    ns: dict[str, object] = {"__name__": "memory_policies_guide"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"memory-policies.md[block {i}]", "exec"), ns)
    fifo_cls, geo_cls, base = ns["FIFOMemory"], ns["MotionGatedMemory"], ns["SpatialMemory"]
    assert issubclass(fifo_cls, base) and issubclass(geo_cls, base)  # type: ignore[arg-type]
    # FIFO: an exact repeat is written (the default memory would skip it)
    fifo = fifo_cls(dim=8).eval()  # type: ignore[operator]
    state = fifo.init_state(1, 2)
    key = torch.randn(1, 2, 8)
    for _ in range(2):
        state = fifo.update(state, key, key)
    assert int(state.count[0]) == 4
    # the geometry rule without points falls back to the default behaviour
    geo = geo_cls(dim=8).eval()  # type: ignore[operator]
    state = geo.init_state(1, 2)
    for _ in range(2):
        state = geo.update(state, key, key)
    assert int(state.count[0]) == 2
