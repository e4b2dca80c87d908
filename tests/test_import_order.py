"""Dependencies point one way: every patchbench import (function-level ones too) goes to a lower or the same layer."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = ["errors yamlio durable", "config",
          "registry rundir grid", "adapters data", "models tasks", "recipe", "engine", "studies bench", "cli __main__"]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names.split()}


def rank(module: str) -> int:
    parts = module.split(".")
    return len(LAYERS) if len(parts) == 1 else RANK[parts[1]]  # the package itself (registers models, tasks) is on top


def imports(path: Path, module: str):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("patchbench."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "patchbench":
            yield from (f"{node.module}.{a.name}" if node.module == "patchbench" else node.module for a in node.names)


def test_imports_point_down_the_layers():
    bad = []
    for path in sorted((SRC / "patchbench").rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        bad += [f"{module} -> {target}" for target in imports(path, module) if rank(target) > rank(module)]
    assert not bad, "imports against the layer order " + " < ".join(LAYERS) + ":\n" + "\n".join(bad)


def test_function_level_imports_are_seen(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from patchbench.cli import main\n    import patchbench.engine.trainer\n")
    assert list(imports(f, "patchbench.registry")) == ["patchbench.cli", "patchbench.engine.trainer"]
