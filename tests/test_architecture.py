"""The package's folders are its architecture, and its imports run one way: each module imports only from its own
layer or the layers below (docs/development.md, "The module map"), and no modules import each other in a circle.

Every import of every module counts, those inside functions too (a lazy import is still a dependency), read from
the source with `ast`: nothing is imported to check it.
"""

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "mnist_ffn"

# Lowest first. A module belongs to the first layer that names it or a package above it.
CORE = ("errors", "version", "messages", "quoting", "files", "catalog", "points_csv", "presets", "config")
LAYERS = [
    ("core", {f"mnist_ffn.{name}" for name in CORE}),
    ("data", {"mnist_ffn.data"}),
    ("training", {"mnist_ffn.training"}),
    ("inference", {"mnist_ffn.inference"}),
    ("experiments", {"mnist_ffn.experiments"}),
    ("web", {"mnist_ffn.web"}),
    ("api", {"mnist_ffn.api"}),
    ("cli", {"mnist_ffn.cli"}),
    ("entry points", {"mnist_ffn", "mnist_ffn.__main__"}),
]
SUBPACKAGES = ("data", "training", "inference", "experiments", "web", "cli")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def layer(module: str) -> int:
    for rank, (_, members) in enumerate(LAYERS):
        if module in members or any(module.startswith(f"{member}.") for member in members if member != "mnist_ffn"):
            return rank
    raise AssertionError(f"{module}: in no layer of LAYERS (add it to the module map and to LAYERS)")


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that the file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from mnist_ffn.experiments import storage` imports the module mnist_ffn.experiments.storage
            names = [f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in known]
            names = names or [node.module]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def test_every_import_runs_down_the_layers():
    known = modules()
    upward = []
    for module, path in known.items():
        for imported in imports_of(path, known) - {module}:
            if layer(imported) > layer(module):
                upward.append(
                    f"{module} ({LAYERS[layer(module)][0]}) imports {imported} ({LAYERS[layer(imported)][0]})"
                )
    assert not upward, "imports against the direction:\n" + "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    known = modules()
    graph = {module: imports_of(path, known) - {module} for module, path in known.items()}
    # a package's __init__ is not a step of a circle: importing mnist_ffn.x.y imports the package mnist_ffn.x first
    graph = {
        module: {name for name in imported if not module.startswith(f"{name}.")} for module, imported in graph.items()
    }
    circles = [component for component in _strongly_connected(graph) if len(component) > 1]
    assert not circles, f"modules that import each other in a circle: {circles}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules from each of which every other one of the group is reachable."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in graph.get(node, ()):
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_the_top_holds_the_core_and_the_entry_points_and_each_subpackage_init_is_light():
    """At most a dozen modules at the package's top; a subpackage's __init__.py is its docstring alone, so that
    importing one module of a layer imports nothing else of it."""
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top
    for name in SUBPACKAGES:
        tree = ast.parse((PACKAGE / name / "__init__.py").read_text())
        assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr), (
            f"{name}/__init__.py holds more than a docstring"
        )


def test_the_module_map_in_the_docs_names_every_module():
    """docs/development.md's map and the code agree: every module is in the map, and the map names no other."""
    text = (PROJECT_ROOT / "docs" / "development.md").read_text()
    section = text.split("## The module map", 1)[1].split("\n## ", 1)[0]
    mapped = "\n".join(line for line in section.splitlines() if line.startswith("|"))  # the map's table
    for module, path in modules().items():
        if path.name == "__init__.py" and module != "mnist_ffn":
            continue  # a subpackage is named by its folder
        shown = str(path.relative_to(PACKAGE)) if path.name != "__init__.py" else "__init__.py"
        assert f"`{shown}`" in mapped, f"{shown} is not in the module map"
    for named in {word.strip("`") for word in mapped.split() if word.startswith("`") and word.endswith(".py`")}:
        assert (PACKAGE / named).is_file(), f"the module map names {named}, which is not a module"


def test_importing_the_package_and_asking_for_help_load_no_torch():
    """`import mnist_ffn` and `mnist-ffn --help` answer at once: torch is imported by the commands that use it."""
    code = "\n".join([
        "import sys, mnist_ffn", "from mnist_ffn.cli.commands import main", "main(['--help'])",
        "main(['train', '--help'])", "print('torch' in sys.modules, file=sys.stderr)",
    ])  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert result.returncode == 0 and "Usage: mnist-ffn" in result.stdout, result.stderr
    assert result.stderr.strip() == "False", result.stderr
