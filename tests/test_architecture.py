"""The module structure of docs/architecture.md: layers that import only downwards, no import circle, and
options checked only at the edge (no ConfigError below it).

Every import counts, also the ones inside functions (an import deferred to break a circle is still one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"emca": REPO / "emca", "emca_fused": REPO / "ext" / "emca_fused"}

# lowest first; a module belongs to the first layer with a prefix of its name (most specific prefix wins)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("emca.errors", "emca.io", "emca.options", "emca.config", "emca.cli", "emca.progress",
                    "emca.weights", "emca.allocator")),
    ("libraries", ("emca.data", "emca.pose", "emca.networks", "emca.losses", "emca.metrics", "emca.visualize",
                   "emca.personalize.moa", "emca.personalize.data", "emca.personalize.loss", "emca_fused")),
    ("composition", ("emca.build", "emca.protocol", "emca.checkpoint", "emca.module", "emca.personalize.adapter",
                     "emca.personalize.module", "emca.pipeline", "emca.run_summary")),
    ("applications", ("emca.commands", "emca.train", "emca.evaluate", "emca.infer", "emca.animate", "emca.figures",
                      "emca.ablation", "emca.bench", "emca.convert", "emca.export", "emca.demo")),
]  # fmt: skip
PACKAGE_MARKERS = {"emca", "emca.personalize", "emca.data", "emca.pose", "emca.networks", "emca.metrics", "emca_fused"}


def module_files() -> dict[str, Path]:
    modules = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """The project modules ``module`` imports anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {resolve(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {resolve(f"{node.module}.{alias.name}") or resolve(node.module) for alias in node.names}
    return found - {None, module}


GRAPH = {module: imports(module) for module in MODULES}


def layer(module: str) -> int:
    """The layer index; a package's ``__main__`` (its command line) is an application."""
    if module.endswith(".__main__"):
        return len(LAYERS) - 1
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]  # fmt: skip
    if not matches:
        raise AssertionError(f"{module} is in no layer of LAYERS (and docs/architecture.md): add it")
    return max(matches)[1]


@pytest.mark.parametrize("module", sorted(set(MODULES) - PACKAGE_MARKERS))
def test_module_imports_only_its_layer_or_below(module: str) -> None:
    upward = sorted(target for target in GRAPH[module] - PACKAGE_MARKERS if layer(target) > layer(module))
    assert not upward, f"{module} ({LAYERS[layer(module)][0]}) imports a higher layer: {upward}"


def test_kernel_package_is_standalone() -> None:
    for module, targets in GRAPH.items():
        if module.startswith("emca_fused"):
            assert all(target.startswith("emca_fused") for target in targets), (module, targets)


def test_no_import_circle() -> None:
    """Depth-first search for a back edge; the circle is printed if there is one."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(target) :], target]))
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_the_checker_sees_a_circle_and_an_upward_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above can fail: a made-up upward edge and circle are caught."""
    monkeypatch.setitem(GRAPH, "emca.errors", {"emca.build"})
    with pytest.raises(AssertionError, match="imports a higher layer"):
        test_module_imports_only_its_layer_or_below("emca.errors")
    with pytest.raises(AssertionError, match="import circle: .*emca.build.*emca.errors"):
        test_no_import_circle()


# where a command starts: the options machinery, the schemas' checks of configs and files (the build registry,
# the protocol parser) and the applications. Below the edge, classes receive checked values and only assert.
EDGE = ("emca.errors", "emca.options", "emca.config", "emca.cli", "emca.build", "emca.protocol")


def mentions_config_error(source: str) -> bool:
    """Whether a module's source names ConfigError (raises, imports or documents it as its own)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id == "ConfigError":
            return True
        if isinstance(node, ast.alias) and node.name == "ConfigError":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "ConfigError":
            return True
    return False


@pytest.mark.parametrize("module", sorted(set(MODULES) - PACKAGE_MARKERS))
def test_no_config_error_below_the_edge(module: str) -> None:
    if module in EDGE or layer(module) == len(LAYERS) - 1:
        return
    assert not mentions_config_error(MODULES[module].read_text()), (
        f"{module} is below the edge but uses ConfigError: check the option in its schema (emca.options field "
        "ranges / choices / problems) where the command starts, and assert it here"
    )


def test_the_edge_checker_sees_a_config_error() -> None:
    assert mentions_config_error("from emca.errors import ConfigError")
    assert mentions_config_error("import emca.errors\nraise emca.errors.ConfigError('x')")
    assert not mentions_config_error("raise ValueError('ConfigError in a string is not one')")
