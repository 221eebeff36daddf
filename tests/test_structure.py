"""The house's shape, checked: imports of osnet_zoo modules run at the top of modules (never inside a function,
except a module that wraps an optional dependency, marked ``# optional dependency`` on the import line), and the
module import graph has no circle. Both read the source with ``ast``; nothing is imported."""
import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

from conftest import REPO

PACKAGE = REPO / 'osnet_zoo'


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ''
    base = module.split('.') if is_package else module.split('.')[:-1]
    base = base[:len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def _targets(module: str, path: Path, node: ast.AST, known: Dict[str, Path]) -> List[str]:
    """The osnet_zoo modules an import statement loads (``from pkg import sub`` names the submodule)."""
    out = []
    if isinstance(node, ast.Import):
        out = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        target = _resolve(module, path.name == '__init__.py', node)
        subs = [f'{target}.{a.name}' for a in node.names if f'{target}.{a.name}' in known]
        out = subs or [target]
    return [t for t in out if t == 'osnet_zoo' or t.startswith('osnet_zoo.')]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or (
        isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING')


def _scan() -> Tuple[Dict[str, Set[str]], List[str]]:
    """(module -> the package modules it imports at run time, function-body imports of package modules)."""
    known = _modules()
    graph: Dict[str, Set[str]] = {m: set() for m in known}
    inside_functions: List[str] = []
    for module, path in known.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source, str(path))

        def visit(node: ast.AST, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child):
                    continue  # annotations only: not imported at run time
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(module, path, child, known):
                        if in_function and 'optional dependency' not in lines[child.lineno - 1]:
                            inside_functions.append(f'{path.relative_to(PACKAGE.parent)}:{child.lineno} imports '
                                                    f'{target}')
                        elif target != module:
                            graph[module].add(target)
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        visit(tree, False)
    return graph, inside_functions


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                strongconnect(w)
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
            strongconnect(v)
    return found


def test_no_package_import_inside_a_function():
    _, inside = _scan()
    assert not inside, 'import these at the top of the module instead:\n' + '\n'.join(inside)


def test_module_import_graph_has_no_circle():
    graph, _ = _scan()
    assert graph['osnet_zoo.models.osnet']  # the scan sees imports at all
    cycles = _cycles(graph)
    assert not cycles, 'import circles:\n' + '\n'.join(' <-> '.join(c) for c in cycles)


def test_the_checker_finds_a_circle_and_a_function_import():
    """The two checks can fail: a planted circle and a planted function-body import are reported."""
    assert _cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
    tree = ast.parse('def f():\n    from . import cli\n')
    node = tree.body[0].body[0]
    assert _targets('osnet_zoo.train.recipes', PACKAGE / 'train' / 'recipes.py', node, _modules()) == \
        ['osnet_zoo.train']
