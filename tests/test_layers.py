"""The layers of charlm (ARCHITECTURE.md), enforced: every module's imports, read with `ast` (those inside
functions and under TYPE_CHECKING too), go to its own layer or a lower one, and no import cycle exists.

An import of `charlm.a.b.c` also runs the packages `charlm.a` and `charlm.a.b` first, so those count as
imports too (a package's `__init__` must not pull its package's users back in). The root package `charlm`
is the exception: Python runs it before any module of charlm, and it only re-exports the API.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "charlm"

# lowest first; a module may import its own layer and the layers before it
LAYERS = [
    ("errors", "units", "events"),  # the words every layer uses; no charlm imports
    ("files",),  # atomic writes, safe YAML, bounded reads, signals, limits, caches
    ("runtime",),  # device, native precision, process group, measured kernels
    ("config", "coerce"),  # typed settings, validated once; plain data to typed dataclasses
    ("data", "model"),  # text to ids to batches; the network
    ("store",),  # what is kept on disk: state, checkpoints, run and model folders
    # a model used: scored, adapted, sampled, looked inside, mixed with counts
    ("evaluate", "dynamic", "generation", "analysis", "counts"),
    ("ui",),  # what people see: terminal, tables, plots, pages
    ("training", "autosize", "export", "serve"),  # the work: train, size a config, write or serve a model
    ("api",),  # the Python API
    ("cli", "__main__"),  # the command line
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or path.is_dir()


def imports_in(source: str, name: str, *, is_package: bool = False) -> list[tuple[int, str, str]]:
    """(line, the module imported, as written) for every charlm import in `source`, at any depth."""
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, f"import {alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.append((node.lineno, target if is_module(target) else base, f"from {base} import {alias.name}"))
    return [(line, target, text) for line, target, text in found if target.split(".")[0] == "charlm"]


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None


def upward_imports(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Every import, in {module: (source, is_package)}, of a module in a higher layer than its own."""
    upward = []
    for module, (source, is_package) in sources.items():
        own = layer_of(module)
        if own is None:  # the root package: it re-exports the API
            continue
        for line, target, text in imports_in(source, module, is_package=is_package):
            their = layer_of(target)  # None for `from charlm import __version__`: the root has always run already
            if their is not None and their > own:
                upward.append(
                    f"{module}:{line}: {text} (the {LAYERS[own][0]} layer imports the {LAYERS[their][0]} "
                    "layer above it)"
                )
    return upward


def runs(target: str) -> list[str]:
    """The modules an import of `target` runs: its packages (not the root) and itself."""
    parts = target.split(".")
    return [".".join(parts[: i + 1]) for i in range(1, len(parts))]


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
SOURCES = {m: (p.read_text(encoding="utf-8"), p.name == "__init__.py") for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if m != "charlm" and layer_of(m) is None]
    assert not missing, f"add these to LAYERS (and to ARCHITECTURE.md): {missing}"


def test_no_import_goes_up_a_layer():
    upward = upward_imports(SOURCES)
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_the_check_reports_an_upward_import_inside_a_function():
    probe = {
        "charlm.analysis.probe": ("def f():\n    from charlm.training import loop\n", False),
        "charlm.training.probe": ("from charlm.analysis import surprisal\n", False),
    }
    assert upward_imports(probe) == [
        "charlm.analysis.probe:2: from charlm.training import loop "
        "(the evaluate layer imports the training layer above it)"
    ]


def test_no_import_cycle():
    graph = {
        m: sorted({r for _, t, _ in imports_in(s, m, is_package=pkg) for r in runs(t) if r in MODULES} - {m})
        for m, (s, pkg) in SOURCES.items()
    }
    assert not cycles(graph), "import cycles:\n" + "\n".join(cycles(graph))


def test_the_cycle_check_sees_a_cycle_through_a_package():
    # a module importing a sibling runs the package's __init__, which imports the module back
    assert cycles({"p": ["p.a"], "p.a": ["p", "p.b"], "p.b": []}) == ["p -> p.a -> p"]


def cycles(graph: dict[str, list[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    found = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in graph[module]:
            if state.get(nxt) == 1:
                found.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    return found


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_loading_a_checkpoint_does_not_load_the_trainer():
    loaded = _modules_after("import charlm.store.checkpoint, charlm.store.model_dir, charlm.evaluate")
    assert "charlm.store.checkpoint" in loaded
    assert not {m for m in loaded if m.startswith("charlm.training")}, sorted(loaded)


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["train", "--help"]])
def test_help_does_not_import_torch(argv):
    loaded = _modules_after(f"from charlm.cli.main import main\nmain({argv!r})")
    assert "charlm.cli.train" in loaded
    assert "torch" not in loaded


def test_architecture_md_names_every_package_and_top_level_module():
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8").split("\n## Packages")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| `")}
    tree = {
        f"`{p.name}/`" if p.is_dir() else f"`{p.name}`"
        for p in PACKAGE.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.stem not in {"__init__", "__main__"})
    }
    assert tree - rows == set(), "ARCHITECTURE.md's table lacks these: add a row with the job and what it must not do"
    assert rows - tree == set(), "ARCHITECTURE.md's table names what the tree no longer has"
