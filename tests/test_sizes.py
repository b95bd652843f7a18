"""The size guide (CONTRIBUTING: functions under ~60 lines, classes under ~150, modules under ~350), checked on
the formatted code: a module that grows past it wants splitting where it reads better, not a longer limit.
An exception is named here with the reason, and ARCHITECTURE.md says it too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "charlm"
LIMITS = {"module": 350, "function": 60, "class": 150}
EXCEPTIONS: dict[str, str] = {}  # "path:name" -> why it may be longer


def oversized(source: str, where: str) -> list[str]:
    found = []
    if source.count("\n") > LIMITS["module"]:
        found.append(f"{where}: {source.count(chr(10))} lines (module, limit {LIMITS['module']})")
    for node in ast.walk(ast.parse(source)):
        kind = "class" if isinstance(node, ast.ClassDef) else "function"
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            size = node.end_lineno - node.lineno + 1
            if size > LIMITS[kind] and f"{where}:{node.name}" not in EXCEPTIONS:
                found.append(f"{where}:{node.lineno} {node.name}: {size} lines ({kind}, limit {LIMITS[kind]})")
    return found


def test_no_module_function_or_class_over_the_guide():
    found = [
        line
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in oversized(path.read_text(encoding="utf-8"), path.relative_to(PACKAGE.parent).as_posix())
    ]
    assert not found, "over the size guide:\n" + "\n".join(found)


def test_the_check_sees_a_long_function_and_a_long_module():
    body = "".join(f"    x = {i}\n" for i in range(61))
    assert oversized(f"def long():\n{body}", "charlm/probe.py") == [
        "charlm/probe.py:1 long: 62 lines (function, limit 60)"
    ]
    assert oversized("x = 1\n" * 351, "charlm/probe.py") == ["charlm/probe.py: 351 lines (module, limit 350)"]
