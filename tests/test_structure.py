"""The house as ARCHITECTURE.md draws it: imports point down its list of modules (no
circle), no source module above 600 lines, and the report reads results without the
round loop or the analyses' science."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "imprint"
LONGEST = 600
LONG_ALLOWED = {"cli.py"}  # the declarative argparse table, if it grows


def _listed_order() -> list[str]:
    """The top-level modules and packages of ARCHITECTURE.md's list, top first."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = text.split("```")[1]
    return [m.group(1) for m in re.finditer(r"^(\w+)(?:\.py|/)\s", block, re.MULTILINE)]


def _imports(path: Path) -> list[str]:
    """The imprint modules ``path`` imports (top-level names: imprint.X.y -> X)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("imprint."):
            out.append(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out += [a.name.split(".")[1] for a in node.names if a.name.startswith("imprint.")]
    return out


def _modules() -> list[tuple[str, Path]]:
    """(top-level name, file) of every source file but the package's own."""
    top_files = (PACKAGE / "__init__.py", PACKAGE / "__main__.py")
    return [
        (path.relative_to(PACKAGE).parts[0].removesuffix(".py"), path)
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in top_files
    ]


def test_every_module_is_listed_and_imports_point_down_the_list():
    order = _listed_order()
    rank = {name: i for i, name in enumerate(order)}
    upward = []
    for top, path in _modules():
        assert top in rank, f"{path} is not in ARCHITECTURE.md's list"
        for dep in _imports(path):
            if dep != top and rank[dep] <= rank[top]:
                upward.append(f"{path.relative_to(ROOT)} imports imprint.{dep}")
    assert not upward, upward


def test_no_source_module_is_longer_than_600_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > LONGEST and path.name not in LONG_ALLOWED
    }
    assert not long, long


def test_the_report_reads_results_not_the_loop_or_the_science():
    for name in ("report.py", "compare.py", "pages.py"):
        deps = set(_imports(PACKAGE / name))
        assert not deps & {"imp", "analysis"}, (name, deps)
