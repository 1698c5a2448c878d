"""The README's Python blocks run as written.

The blocks run in order in one namespace, in an empty working folder (so the published
``spann3r.pth`` is absent and the README's guard takes the small-model path). A block preceded by
the line ``<!-- needs the published checkpoint: REASON -->`` is skipped with that reason.
"""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(
    r"(?:<!-- needs the published checkpoint: (?P<reason>.*?) -->\s*\n)?"
    r"```python\n(?P<code>.*?)```",
    re.DOTALL,
)


def _blocks() -> list[tuple[str, str | None]]:
    return [(m["code"], m["reason"]) for m in _BLOCK.finditer(README.read_text())]


def test_the_readme_has_python_blocks() -> None:
    assert _blocks(), "README.md holds no ```python block"


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    skipped = []
    for i, (code, reason) in enumerate(_blocks()):
        if reason is not None:
            skipped.append(reason)
            continue
        exec(compile(code, f"README.md block {i}", "exec"), namespace)
    assert namespace.get("last") is not None  # the streaming loop produced the final frame
    if skipped:
        pytest.skip("; ".join(skipped))
