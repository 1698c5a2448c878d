"""The docstrings are Markdown for mkdocstrings (Google style), not reStructuredText.

Cross-references use the autorefs syntax ``[`Name`][spatialmem.path.Name]`` (the identifier as
rendered on the API pages); code examples use fenced blocks (an ``Example:`` section holding a
```python block). Sphinx roles and reST literal blocks would show up as literal text on the site.
"""

import ast
import logging
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
FILES = sorted(SRC.rglob("*.py"))
ROLE = re.compile(r":(class|meth|func|attr|mod|data|exc|obj|ref|py:\w+):`")
# a reST literal block is introduced by a paragraph ending in "::" (``Example::``, ``text::``) or
# by a line that is only "::"; a directive (``.. note::``) ends the same way
LITERAL = re.compile(r"(?<!:)::[ \t]*$")


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def _docstrings(path: Path) -> list[tuple[int, str]]:
    """``(first line, text)`` of every string statement: module, class, function and attribute
    docstrings."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node.lineno, node.value.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]


def test_no_sphinx_roles() -> None:
    hits = [
        f"{_where(path, i)}: {line.strip()}"
        for path in FILES
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if ROLE.search(line)
    ]
    assert not hits, (
        "Sphinx roles render as literal text with mkdocstrings; write "
        "[`Name`][spatialmem.module.Name] (the path of the object on the API pages), or plain "
        "backticks for objects that are not documented there:\n" + "\n".join(hits)
    )


def test_no_rest_literal_blocks() -> None:
    hits = []
    for path in FILES:
        source_lines = path.read_text().splitlines()
        for start, text in _docstrings(path):
            for offset, line in enumerate(text.splitlines()):
                if LITERAL.search(line):
                    lineno = start + offset
                    hits.append(f"{_where(path, lineno)}: {source_lines[lineno - 1].strip()}")
    assert not hits, (
        "reST literal blocks (`Example::`, `text::` + indented block) render as plain text; use "
        "a Google `Example:` section or a fenced ```python / ```text block:\n" + "\n".join(hits)
    )


def _mkdocs_python_options() -> dict:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            return plugin["mkdocstrings"]["handlers"]["python"]["options"]
    raise AssertionError("mkdocs.yml has no mkdocstrings python handler")


def test_docstrings_parse_cleanly_as_rendered() -> None:
    """Parsed as the docs build parses them: no parser warnings, and no Returns/Yields section
    split into several rows (continuation lines read as new items)."""
    griffe = pytest.importorskip("griffe")
    options = _mkdocs_python_options()
    assert options.get("docstring_style") == "google"
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("griffe")
    logger.addHandler(handler)
    try:
        loader = griffe.GriffeLoader(
            search_paths=[str(SRC)],
            docstring_parser=griffe.Parser.google,
            docstring_options=options.get("docstring_options", {}),
        )
        package = loader.load("spatialmem")
        split = []
        seen: set[str] = set()
        stack = [package]
        while stack:
            obj = stack.pop()
            if obj.path in seen:
                continue
            seen.add(obj.path)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
            if obj.docstring is None:
                continue
            for section in obj.docstring.parsed:
                rows = section.value if section.kind.value in ("returns", "yields") else []
                if len(rows) > 1 and any(not row.name for row in rows):
                    split.append(f"{obj.path} ({obj.relative_filepath}:{obj.docstring.lineno})")
    finally:
        logger.removeHandler(handler)
    assert not warnings, "\n".join(warnings)
    assert not split, "Returns/Yields sections split into several rows:\n" + "\n".join(split)
