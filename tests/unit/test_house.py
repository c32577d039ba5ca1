"""The layout rules of the package (README, Development): data flows down, commands are a thin top floor."""

import ast
import glob
import os

import pytest

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "vmatrace_bpf")
MAX_LINES = 350


def modules():
    """{'session': path, 'commands.watch': path, ...}"""
    out = {}
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py") and f != "__main__.py":
                rel = os.path.relpath(os.path.join(root, f), PKG)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(root, f)
    return out


def imports(name, path):
    """Package modules NAME imports (anywhere in the file, function-local imports included)."""
    tree = ast.parse(open(path).read())
    pkg = name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[:len(pkg) - node.level + 1] if node.level > 1 else pkg
            mod = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:  # from . import x
                out.update(".".join(base + [a.name]) for a in node.names)
            else:
                out.add(mod)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vmatrace_bpf."):
            out.add(node.module[len("vmatrace_bpf."):])
    return {m for m in out if m}


MODS = modules()
GRAPH = {m: {i for i in imports(m, p) if i in MODS} for m, p in MODS.items()}


def test_the_module_list_is_real():
    assert {"session", "aggregate", "recording", "reader", "render", "events", "plan", "commands.watch"} <= set(MODS)


@pytest.mark.parametrize("cmd", sorted(m for m in MODS if m.startswith("commands.")))
def test_no_command_imports_another(cmd):
    assert not {i for i in GRAPH[cmd] if i.startswith("commands")}, GRAPH[cmd]


def test_nothing_below_the_commands_imports_them():
    for m, deps in GRAPH.items():
        if m.startswith("commands") or m == "cli":
            continue
        assert not {d for d in deps if d.startswith("commands") or d == "cli"}, m


def test_no_import_cycles():
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", " -> ".join(path + [m])
        state[m] = "open"
        for d in GRAPH[m]:
            visit(d, path + [m])
        state[m] = "done"

    for m in GRAPH:
        visit(m, [])


def test_only_the_loader_imports_bcc():
    for m, p in MODS.items():
        tree = ast.parse(open(p).read())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert m == "loader" or "bcc" not in names, m


@pytest.mark.parametrize("mod", ["procmaps", "vma", "smapsparse", "mapstotals"])
def test_smaps_parsing_stands_on_nothing_above_it(mod):
    assert not GRAPH[mod] & {"render", "session", "loader", "aggregate", "mapsview", "mapsall", "snapshot"}


@pytest.mark.parametrize("mod", sorted(MODS))
def test_modules_are_short_or_say_why(mod):
    text = open(MODS[mod]).read()
    n = text.count("\n")
    if n > MAX_LINES:
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert "Longer than" in doc, f"{mod}: {n} lines and no reason at its top ('Longer than ... because')"


def test_pr_set_vma_is_defined_once_on_the_python_side():
    owners = [m for m, p in MODS.items() if "0X53564D41" in open(p).read().upper()]
    assert owners == ["workload"], owners


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "examples", "*.py"))))
def test_examples_import_what_exists(path):
    """Every `from vmatrace_bpf.X import Y` of an example names a module and a name that exist (a module
    renamed under an example broke it silently once: vmatrace_bpf.bench -> forkbench)."""
    import importlib
    tree = ast.parse(open(path).read())
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("vmatrace_bpf"):
            mod = importlib.import_module(n.module)
            for a in n.names:
                assert hasattr(mod, a.name), f"{os.path.basename(path)}: {n.module} has no {a.name}"
