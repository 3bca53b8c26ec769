"""The code's layout: one registry of methods that every command asks (no branch on a method's
name outside `steerable/methods/`), registry entries that resolve, and no import cycle between
the packages."""

import ast
import re
from pathlib import Path

import pytest

from steerable import methods
from steerable.errors import SteerableError
from steerable.methods.base import resolve

SRC = Path(__file__).resolve().parents[1] / "src" / "steerable"

# A method's name compared or looked up outside the registry: `x.method == "ric"`, `method != ...`,
# `method in ("ric", ...)`, and the playground's `card.method === "ric"`.
NAME_BRANCH = re.compile(r"\.method\s*(==|!=)|\bmethod\s*(!=|===|!==)|\bmethod\s+in\s+\(")


def test_no_code_outside_the_registry_branches_on_a_method_name():
    found = []
    for path in sorted(SRC.rglob("*")):
        if path.suffix not in (".py", ".html") or (SRC / "methods") in path.parents:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if NAME_BRANCH.search(line):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not found, "branches on a method's name (ask steerable.methods instead):\n" + "\n".join(found)


def test_the_name_branch_pattern_finds_what_it_should():
    for line in (
        'if manifest.method == "ric":',
        'if card.method === "np-dpo") {',
        'if method in ("a", "b"):',
    ):
        assert NAME_BRANCH.search(line), line
    assert not NAME_BRANCH.search("if methods.get(manifest.method).in_prompt:")


def name_tests(source: str) -> list[str]:
    """Where `source` tests a method against a registered name written out: `"ric" in methods`,
    `"ric" not in plan.methods`, `method == "ric"`, `{"soups", "morlhf"} & set(plan.methods)`
    (one side a name literal or a literal collection holding one, the other naming a method)."""

    def literal(node) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in methods.METHODS
        return isinstance(node, ast.Tuple | ast.List | ast.Set) and any(map(literal, node.elts))

    def about_methods(node) -> bool:
        return any(
            "method" in (part.id if isinstance(part, ast.Name) else part.attr)
            for part in ast.walk(node)
            if isinstance(part, ast.Name | ast.Attribute)
        )

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd | ast.BitOr | ast.Sub):
            sides = [node.left, node.right]
        else:
            continue
        if any(map(literal, sides)) and any(about_methods(side) for side in sides if not literal(side)):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_code_outside_the_registry_tests_a_method_against_a_name():
    found = [
        f"{path.relative_to(SRC)}:{where}"
        for path in sorted(SRC.rglob("*.py"))
        if (SRC / "methods") not in path.parents
        for where in name_tests(path.read_text())
    ]
    ask = "tests of a method against its name (ask steerable.methods instead):\n"
    assert not found, ask + "\n".join(found)


def test_the_name_test_finder_finds_what_it_should():
    source = """
if "ric" in methods: pass
if "ric" not in plan.methods: pass
if {"soups", "morlhf", "moslim"} & set(plan.methods): pass
if manifest.method in ("moslim", "tags"): pass
if spec.kind == "moslim": pass
if methods.get(name).in_prompt: pass
"""
    assert [line.split(":")[0] for line in name_tests(source)] == ["2", "3", "4", "5"]


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_every_registered_method_resolves(name):
    method = methods.get(name)
    assert method.name == name and method.summary and method.title
    assert set(method.steering) <= {"weights", "mapping", "targets", "levels", "examples", "divergence"}
    assert callable(resolve(method.sweep))
    references = [method.check, method.plan, method.compare, *method.report]
    if method.trainable:
        config = resolve(method.config)
        assert "output_dir" in config.__dataclass_fields__ and callable(resolve(method.recipe))
        if method.modality == "text":  # a comparison trains text methods on shared prompts
            assert method.compare is not None, "a method that trains says how a comparison trains it"
    else:
        assert method.config is None and method.plan is None and not method.report
        # an untrained method is compared only on another's directory (MOD on soups' experts)
        assert (method.compare is None or method.reads) and not method.uses_scored
    for reference in filter(None, references):
        assert callable(resolve(reference)), reference
    if method.policy is not None:
        steering = method.steering_of()
        protocol = ("levels", "adapter", "attach", "steering_for", "tags", "request", "conditioner")
        for function in (*protocol, "generate"):
            assert callable(getattr(steering, function)), f"{method.policy} has no {function}"
    if method.images is not None:
        loader = method.image_policy()
        for function in ("from_pretrained", "request", "generate", "sample", "steering_for"):
            assert callable(getattr(loader, function)), f"{method.images} has no {function}"
    assert set(method.evaluate_options) <= {"adapter", "mapping", "guidance", "sampling_steps", "divergence"}


def test_an_unknown_method_lists_the_choices():
    with pytest.raises(SteerableError, match=r"unknown method 'dpo'; choose from \['ric', 'moslim'"):
        methods.get("dpo")


def test_the_registry_imports_no_heavy_library():
    import subprocess
    import sys

    heavy = "('torch', 'trl', 'transformers')"
    code = f"import sys, steerable.methods; print(sorted(m for m in {heavy} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def import_graph() -> dict[str, set[str]]:
    """steerable's subpackages and top-level modules, each with those it imports (at module
    level or inside a function)."""

    def node(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if parts[0] == "steerable" and len(parts) > 1 else None

    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC)
        if relative.name == "__init__.py" and len(relative.parts) == 1:
            continue
        source = relative.parts[0].removesuffix(".py")
        edges = graph.setdefault(source, set())
        for statement in ast.walk(ast.parse(path.read_text())):
            if isinstance(statement, ast.Import):
                targets = [alias.name for alias in statement.names]
            elif isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
                base = statement.module
                targets = [
                    f"{base}.{alias.name}" if base == "steerable" else base for alias in statement.names
                ]
            else:
                continue
            edges.update(t for t in map(node, targets) if t is not None and t != source)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_packages():
    graph = import_graph()
    packages = {name for name in graph if (SRC / name).is_dir()}
    assert {"methods", "evaluation", "serving", "scorers", "reward_models"} <= packages
    between_packages = cycles({p: graph[p] & packages for p in packages})
    every = cycles(graph)
    assert not between_packages, (
        f"import cycles between packages: {between_packages}; every cycle with the top-level modules: {every}"
    )


def test_generation_cost_and_evaluation_are_in_no_import_cycle():
    """The cycles broken so far stay broken: generation records its rate into `rates`, which
    imports neither it nor `cost`; compare's cost plan lives with compare."""
    every = cycles(import_graph())
    for module in ("cost", "rates", "defaults", "generation", "evaluation"):
        assert not [c for c in every if module in c], f"{module} is in an import cycle: {every}"


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
