"""The rooms and their arrows: every module imports alone, the import graph has no circle, and the runtime
(face_app) never reaches into training. See docs/architecture.md."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("training", "face_app")


def modules() -> list[str]:
    """Every module of the two packages, dotted (`training.cf`), packages' __init__ left out."""
    return sorted(f"{package}.{path.stem}" for package in PACKAGES for path in (ROOT / package).glob("*.py")
                  if path.stem != "__init__")


def imported_modules(module: str, known: set[str]) -> set[str]:
    """The modules of `known` that `module` imports anywhere in its file: at module level or in a function."""
    tree = ast.parse((ROOT / Path(*module.split("."))).with_suffix(".py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from training import cf` names a module; `from training.cf import LightGCN` names its module
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in known)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    known = set(modules())
    return {module: imported_modules(module, known) for module in known}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as a path that ends where it starts, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return [*path[path.index(child):], child]
            if child not in state and (cycle := visit(child)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_reader_sees_function_level_imports_and_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    # training.evaluate imports the stages it scores, training.tune imports peft inside a function
    graph = import_graph()
    assert {"training.cf", "training.face", "training.tune", "training.metrics"} <= graph["training.evaluate"]


def test_the_import_graph_of_training_and_face_app_has_no_circle() -> None:
    assert find_cycle(import_graph()) is None


def test_face_app_never_imports_training() -> None:
    graph = import_graph()
    leaks = {module: sorted(dep for dep in deps if dep.startswith("training."))
             for module, deps in graph.items() if module.startswith("face_app.")}
    assert {module: deps for module, deps in leaks.items() if deps} == {}
    for path in (ROOT / "face_app").glob("*.py"):  # not even the package itself
        assert not any(isinstance(node, ast.ImportFrom) and node.module == "training"
                       for node in ast.walk(ast.parse(path.read_text()))), path


def test_libraries_sit_below_the_stages() -> None:
    """metrics and workdir import nothing of training; the loop and the stages import no stage but cf."""
    graph = import_graph()
    assert not {dep for dep in graph["training.metrics"] if dep.startswith("training.")}
    assert not {dep for dep in graph["training.workdir"] if dep.startswith("training.")}
    stages = {"training.data", "training.cf", "training.face", "training.rqvae", "training.tune",
              "training.evaluate", "training.export"}
    assert not graph["training.loop"] & stages
    for stage in stages - {"training.evaluate"}:
        # face builds on the LightGCN model of cf; nothing else reaches into another stage
        allowed = {"training.cf", "training.data"} if stage == "training.face" else {"training.data"}
        assert graph[stage] & stages <= allowed, stage


# Third-party packages the fork server imports before it forks: what every module would otherwise import again
# in its own interpreter (3-9 s a module on a 2-core machine in `pytest --durations`, for some forty modules).
THIRD_PARTY = ("numpy", "pandas", "torch", "safetensors", "transformers", "gradio")
FORK_SERVER = """
import json, os, sys, threading, traceback
for name in sys.argv[2].split(","):
    __import__(name)
for module in sys.argv[3:]:
    # a fork copies only this thread: a lock another thread held (the import lock) would stay held in the child
    assert threading.active_count() == 1, [t.name for t in threading.enumerate()]
    pid = os.fork()
    if pid == 0:  # the child: a fresh interpreter's state plus the third-party packages, then `module` alone
        try:
            __import__(module)
            code = 0
        except BaseException:
            with open(os.path.join(sys.argv[1], module + ".err"), "w") as out:
                out.write(traceback.format_exc())
            code = 1
        sys.stdout.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps([module, os.waitstatus_to_exitcode(status)]), flush=True)
"""


@pytest.fixture(scope="module")
def lone_imports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """module -> None when it imports alone, else why not. One fresh interpreter imports the third-party
    packages once and forks a child per module, which imports that module and nothing of ours before it:
    the same check as one interpreter per module, without importing torch and gradio thirty times."""
    errors = tmp_path_factory.mktemp("imports")
    result = subprocess.run([sys.executable, "-c", FORK_SERVER, str(errors), ",".join(THIRD_PARTY), *modules()],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    codes = dict(json.loads(line) for line in result.stdout.splitlines() if line.startswith("["))
    return {module: None if codes.get(module) == 0 else
            ((errors / f"{module}.err").read_text()[-2000:] if (errors / f"{module}.err").exists()
             else f"no result (exit {codes.get(module)})") for module in modules()}


@pytest.mark.parametrize("module", modules())
def test_every_module_imports_alone_in_a_fresh_interpreter(module: str, lone_imports: dict[str, str | None]) -> None:
    assert lone_imports[module] is None, lone_imports[module]


def test_the_fork_server_reports_a_module_that_does_not_import(tmp_path: Path) -> None:
    (tmp_path / "broken_module.py").write_text("import numpy\nfrom face_app import no_such_thing\n")
    result = subprocess.run([sys.executable, "-c", FORK_SERVER, str(tmp_path), "numpy", "broken_module", "json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert [json.loads(line) for line in result.stdout.splitlines()] == [["broken_module", 1], ["json", 0]]
    assert "no_such_thing" in (tmp_path / "broken_module.err").read_text()
