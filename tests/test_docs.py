"""Every ```python block of the guides runs (blocks of one page share a namespace)."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(
    p
    for p in [DOCS / "getting-started.md", DOCS / "api" / "interop.md", *DOCS.glob("guides/*.md")]
    if p.exists()
)
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.usefixtures("without_typecheck")  # as users run it: the library's own checks
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_code_blocks_run(page: Path) -> None:
    blocks = BLOCK.findall(page.read_text())
    assert blocks, f"{page} has no python block"
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
