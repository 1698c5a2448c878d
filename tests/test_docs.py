"""Every ```python / ```py block of the documentation runs (blocks of one page share a namespace).

All pages under ``docs/`` are covered, including the API and benchmark pages. A block that cannot
run in the test suite (it needs a downloaded checkpoint, or it is a sketch with free names) is
marked on the line before its fence with an HTML comment that says why, which the rendered page
does not show:

    <!-- docs-test: skip (needs the published checkpoint file) -->
"""

import re
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
ALL_PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<lang>python|py)[ \t]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$",
    re.S | re.M,
)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\b(?P<reason>.*?)-->")
CLAIM = re.compile(r"(runs?|executed|run) (in|by) the test suite", re.I)


def _blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip reason or None)`` of every python block of ``page``."""
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        code = textwrap.dedent(m.group("code"))
        out.append((line, code, skip.group("reason").strip(" ():-") if skip else None))
    return out


def _rel(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


PAGES = [p for p in ALL_PAGES if any(skip is None for _, _, skip in _blocks(p))]


@pytest.mark.usefixtures("without_typecheck")  # as users run it: the library's own checks
@pytest.mark.parametrize("page", PAGES, ids=[_rel(p) for p in PAGES])
def test_code_blocks_run(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for line, code, skip in _blocks(page):
        if skip is None:
            exec(compile(code, f"{_rel(page)}:{line}", "exec"), namespace)


def test_pages_that_claim_to_run_have_blocks() -> None:
    """A page saying its blocks run in the test suite has at least one executed block."""
    claiming = [p for p in ALL_PAGES if CLAIM.search(p.read_text())]
    assert claiming
    assert not [_rel(p) for p in claiming if p not in PAGES]


def test_skipped_blocks_say_why() -> None:
    """Every skip marker gives a reason and sits right before a python block."""
    problems = []
    for page in ALL_PAGES:
        text = page.read_text()
        used = 0
        for line, _, skip in _blocks(page):
            if skip is not None:
                used += 1
                if not skip:
                    problems.append(f"{_rel(page)}:{line}: skip marker without a reason")
        if len(SKIP.findall(text)) != used:
            problems.append(f"{_rel(page)}: a docs-test skip marker is not right before a block")
    assert not problems, "\n".join(problems)


def test_python_blocks_are_found() -> None:
    """The block pattern sees every python fence (indented ones too), so none is missed."""
    for page in ALL_PAGES:
        text = page.read_text()
        fences = re.findall(r"^[ ]*```(?:python|py)[ \t]*$", text, re.M)
        assert len(fences) == len(_blocks(page)), _rel(page)
