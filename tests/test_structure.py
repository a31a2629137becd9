"""The package's shape, read from the source with `ast` (nothing imported but the deprecated aliases):

- only `keras_ldm/backend/` imports jax, tensorflow, torch or tensorflow_text;
- no import cycle among the modules' module-level imports;
- the packages below `presets`/`convert` never import them, or the export and the CLI, at module level;
- the old module paths still import, warn, and hand out the moved objects.
"""

import ast
import importlib
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_ldm"
BACKEND_LIBRARIES = {"jax", "jaxlib", "tensorflow", "tensorflow_text", "torch"}

# The SavedModel's TensorFlow graph (the serving module and the in-graph tokenizer): TensorFlow as the serving
# format, the same under every Keras backend (see keras_ldm/backend/__init__.py); the per-backend program
# builder is keras_ldm.backend.export_program.
EXPORT_EXCEPTIONS = {"keras_ldm.export", "keras_ldm.export_tokenizer"}

# Old path -> {name: new module} of each deprecated alias.
MOVED = {
    "keras_ldm.traced_call": dict.fromkeys(["traced_call", "kept_traced_call"], "keras_ldm.backend.traced_call"),
    "keras_ldm.fast_build": dict.fromkeys(
        ["random_init_skipped", "RANDOM_INITIALIZERS", "CONSTANT_INITIALIZERS"], "keras_ldm.backend.fast_build"
    ),
    "keras_ldm.lazy_tensorflow": dict.fromkeys(
        ["tf", "tensorflow_installed", "LazyModule"], "keras_ldm.backend.lazy_tensorflow"
    ),
    "keras_ldm.layers.torch_kernels": dict.fromkeys(
        ["conv2d_channels_last", "group_norm_channels_last"], "keras_ldm.backend.torch_kernels"
    ),
    "keras_ldm.training.gradients": dict.fromkeys(
        ["value_and_grad", "apply_gradients", "snapshot", "run_train_step", "run_test_step"],
        "keras_ldm.backend.gradients",
    ),
    "keras_ldm.export_backend": dict.fromkeys(
        ["ProgramBuilder", "check_backend", "DEFAULT_PLATFORMS", "SUPPORTED_BACKENDS"],
        "keras_ldm.backend.export_program",
    ),
    "keras_ldm.diffusion.compile": {
        "compile_function": "keras_ldm.backend.compile",
        "make_noise_sampler": "keras_ldm.backend.noise",
        "make_sampling_fn": "keras_ldm.diffusion.loop",
        "sampling_loop": "keras_ldm.diffusion.loop",
    },
}

# Packages that sit below presets/convert (which build and convert models) and export/cli (which use them).
LOWER = ("backend", "layers", "losses", "models", "diffusion", "training", "data", "metrics")
UPPER = ("presets", "convert", "export", "export_backend", "export_tokenizer", "cli")


def module_files():
    """`{module name: path}` of every module of keras_ldm (a package as its `__init__.py`)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def parse(name):
    return ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name]))


def is_package(name):
    return MODULES[name].name == "__init__.py"


def imports(tree, name, module_level_only):
    """`(line, imported module)` of each import in `tree` (of module `name`); `from x import y` yields `x.y`
    where that is a module of keras_ldm, else `x`. Module level: not inside a function body."""
    found = []

    def visit(node, in_function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function = True
        if not (module_level_only and in_function):
            if isinstance(node, ast.Import):
                found.extend((node.lineno, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = resolve(node, name)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    found.append((node.lineno, submodule if submodule in MODULES else base))
            elif isinstance(node, ast.Call) and _imports_by_name(node):
                found.append((node.lineno, node.args[0].value))
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(tree, False)
    return found


def resolve(node, name):
    """The absolute module of `from ... import` (relative imports resolved against `name`)."""
    if not node.level:
        return node.module
    package = name.split(".") if is_package(name) else name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports_by_name(call):
    """`importlib.import_module("x")` or `__import__("x")` with a literal name."""
    function = call.func
    called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    return (
        called in ("import_module", "__import__")
        and call.args
        and isinstance(call.args[0], ast.Constant)
        and isinstance(call.args[0].value, str)
    )


def top_level(module):
    return module.split(".")[0]


def import_graph():
    """`{module: {modules of keras_ldm it imports at module level}}`."""
    return {
        name: {
            imported
            for _, imported in imports(parse(name), name, module_level_only=True)
            if imported in MODULES
        }
        for name in MODULES
    }


def cycles(graph):
    """The strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for node in sorted(graph):
            if node not in index:
                connect(node)
    finally:
        sys.setrecursionlimit(limit)
    return components


def describe(component, graph):
    members = set(component)
    return "; ".join(
        f"{name} -> {', '.join(sorted(graph[name] & members))}" for name in component if graph[name] & members
    )


def test_the_module_list_and_the_import_graph_are_read():
    graph = import_graph()
    assert {"keras_ldm.backend", "keras_ldm.backend.compile", "keras_ldm.models.latent_diffusion"} <= set(MODULES)
    assert "keras_ldm.backend.traced_call" in graph["keras_ldm.models.latent_diffusion"]
    assert "keras_ldm.backend.gradients" in graph["keras_ldm.training.autoencoder_trainer"]  # `from pkg import mod`
    assert sum(map(len, graph.values())) > 100


def test_only_the_backend_package_imports_jax_tensorflow_or_torch():
    offending = [
        f"{MODULES[name].relative_to(PACKAGE.parent)}:{line}: {imported}"
        for name in MODULES
        if not name.startswith("keras_ldm.backend") and name not in EXPORT_EXCEPTIONS
        for line, imported in imports(parse(name), name, module_level_only=False)
        if top_level(imported) in BACKEND_LIBRARIES
    ]
    assert not offending, "import these through keras_ldm/backend/:\n" + "\n".join(offending)


def test_the_backend_package_imports_them_inside_functions_except_the_torch_kernels():
    """So that keras_ldm imports without any of them: only the torch branch imports the torch kernels."""
    offending = [
        f"{name}:{line}: {imported}"
        for name in MODULES
        if name.startswith("keras_ldm.backend") and name != "keras_ldm.backend.torch_kernels"
        for line, imported in imports(parse(name), name, module_level_only=True)
        if top_level(imported) in BACKEND_LIBRARIES
    ]
    assert not offending, offending


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles (module-level imports):\n" + "\n".join(describe(c, graph) for c in found)


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"], ["e"]]
    assert describe(["a", "b", "c"], graph) == "a -> b; b -> c; c -> a"


def test_lower_packages_do_not_import_presets_convert_export_or_cli_at_module_level():
    """E.g. `from_preset` reaches the models without `models/` importing `presets/` at module level."""
    graph = import_graph()
    offending = [
        f"{name} -> {imported}"
        for name in graph
        if name.split(".")[1:2] and name.split(".")[1] in LOWER
        for imported in sorted(graph[name])
        if imported.split(".")[1:2] and imported.split(".")[1] in UPPER
    ]
    assert not offending, offending


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_paths_warn_and_hand_out_the_moved_objects(old):
    if old == "keras_ldm.layers.torch_kernels":
        pytest.importorskip("torch")
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=old.replace(".", r"\.") + " is deprecated"):
        module = importlib.import_module(old)
    for name, new in MOVED[old].items():
        assert getattr(module, name) is getattr(importlib.import_module(new), name), name
