"""The hand-written _core.pyi must describe the built module exactly.

Every public name of dclcomms._core (functions, classes, their methods and
properties) must be in the stub and vice versa, and function parameter names
must match pybind11's signatures. mypy then checks the package against it.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from dclcomms import _core

STUB = Path(_core.__file__).with_name("_core.pyi")
if not STUB.exists():  # editable/in-tree layouts
    STUB = Path(__file__).resolve().parents[1] / "python" / "dclcomms" / "_core.pyi"

_SIG = re.compile(r"^(?:\d+\. )?(\w+)\((.*)\) -> .*$")


def _runtime_params(obj: object) -> list[list[str]]:
    """Parameter names of each pybind11 overload, from its docstring signatures."""
    doc = getattr(obj, "__doc__", "") or ""
    sigs = []
    for line in doc.splitlines():
        m = _SIG.match(line.strip())
        if not m:
            continue
        params, depth, cur = [], 0, ""
        for ch in m.group(2):
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            if ch == "," and depth == 0:
                params.append(cur)
                cur = ""
            else:
                cur += ch
        if cur.strip():
            params.append(cur)
        names = [p.split(":")[0].split("=")[0].strip().lstrip("*") for p in params]
        sigs.append([n for n in names if n not in ("self", "/", "")])
    return sigs


def _stub_params(fn: ast.FunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    if a.vararg:
        names.append(a.vararg.arg)
    if a.kwarg:
        names.append(a.kwarg.arg)
    return [n for n in names if n not in ("self", "cls")]


def _public(names: object) -> set[str]:
    return {n for n in names if not n.startswith("_")}  # type: ignore[attr-defined]


def _check_function(qual: str, fn: ast.FunctionDef, obj: object, problems: list[str]) -> None:
    sigs = _runtime_params(obj)
    if sigs and _stub_params(fn) not in sigs:
        problems.append(f"{qual}: stub params {_stub_params(fn)} not in runtime {sigs}")


def test_stub_matches_module() -> None:
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    problems: list[str] = []
    stub_names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            stub_names.add(node.name)
            if not hasattr(_core, node.name):
                problems.append(f"stub function {node.name} missing at runtime")
                continue
            _check_function(node.name, node, getattr(_core, node.name), problems)
        elif isinstance(node, ast.ClassDef):
            stub_names.add(node.name)
            cls = getattr(_core, node.name, None)
            if cls is None:
                problems.append(f"stub class {node.name} missing at runtime")
                continue
            members: set[str] = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members.add(item.name)
                    attr = getattr(cls, item.name, None)
                    if attr is None:
                        problems.append(f"{node.name}.{item.name} missing at runtime")
                    elif (
                        not isinstance(attr, property)
                        and item.name != "__init__"
                        and callable(attr)
                    ):
                        _check_function(f"{node.name}.{item.name}", item, attr, problems)
                    elif item.name == "__init__":
                        _check_function(f"{node.name}.__init__", item, attr, problems)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    members.update(t.id for t in item.targets if isinstance(t, ast.Name))
            runtime_members = _public(
                n for n in vars(cls) if not (n.startswith("__") and n.endswith("__"))
            )
            for missing in sorted(runtime_members - members):
                problems.append(f"{node.name}.{missing} exists at runtime but not in the stub")
            for extra in sorted(_public(members) - _public(dir(cls))):
                problems.append(f"{node.name}.{extra} in the stub but not at runtime")
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stub_names.add(node.target.id)
    runtime = _public(vars(_core))
    for missing in sorted(runtime - _public(stub_names)):
        problems.append(f"_core.{missing} exists at runtime but not in the stub")
    assert not problems, "\n".join(problems)


def test_mypy_strict_on_package() -> None:
    """mypy --strict over the package sources, with _core.pyi as the module's types."""
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"],  # config: pyproject.toml
        capture_output=True,
        text=True,
        cwd=repo,
    )
    assert out.returncode == 0, out.stdout + out.stderr
