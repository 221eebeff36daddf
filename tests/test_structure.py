"""The house's shape, checked: imports of osnet_zoo modules run at the top of modules (never inside a function,
except a module that wraps an optional dependency, marked ``# optional dependency`` on the import line); the
module import graph has no circle, counting the parent packages an import runs (``import osnet_zoo.a.b`` runs
``osnet_zoo/a/__init__.py`` first); and no function is longer than 80 lines. These read the source with ``ast``;
only the import-order test imports the package (in fresh subprocesses).

``python tests/test_structure.py`` prints the package graph: each subpackage (or top-level module) and the
subpackages it imports, a ``X.__main__`` counted as the CLI layer, apart from ``X``."""
import ast
import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set, Tuple


from conftest import REPO, run_python

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


def _ancestors(module: str) -> List[str]:
    """``osnet_zoo.a.b`` -> ``['osnet_zoo', 'osnet_zoo.a']``: the packages Python initialises before it."""
    parts = module.split('.')
    return ['.'.join(parts[:i]) for i in range(1, len(parts))]


def _with_parents(module: str, target: str, known: Dict[str, Path]) -> List[str]:
    """``target`` and the parent packages importing it runs, less ``module``'s own ancestors (those are
    initialised, or being initialised, whenever ``module`` runs) and ``module`` itself."""
    own = set(_ancestors(module)) | {module}
    return [p for p in _ancestors(target) + [target] if p in known and p not in own]


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
                        else:
                            graph[module].update(_with_parents(module, target, known))
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        visit(tree, False)
        graph[module].update(t for target in _lazy_targets(module, path, tree)
                             for t in _with_parents(module, target, known))
    return graph, inside_functions


def _lazy_targets(module: str, path: Path, tree: ast.Module) -> List[str]:
    """The modules a package's ``_LAZY_EXPORTS`` dict (osnet_zoo/_lazy.py) loads on first access: imports too,
    only later, so they count as edges of the graph."""
    targets = []
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == '_LAZY_EXPORTS'
                                                 for t in node.targets) and isinstance(node.value, ast.Dict)):
            for value in node.value.values:
                relative = value.value
                level = len(relative) - len(relative.lstrip('.'))
                fake = ast.ImportFrom(module=relative.lstrip('.') or None, names=[], level=level)
                targets.append(_resolve(module, path.name == '__init__.py', fake))
    return targets


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


def _layer(module: str) -> str:
    """The node of ``module`` in the package graph: its subpackage or top-level module below ``osnet_zoo``
    (``osnet_zoo.weights.hub`` -> ``weights``), ``X.__main__`` for a CLI module, ``osnet_zoo`` for the root."""
    parts = module.split('.')[1:]
    if not parts:
        return 'osnet_zoo'
    return f'{parts[0]}.__main__' if parts[-1] == '__main__' and len(parts) > 1 else parts[0]


def package_graph(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """The module graph folded onto packages: each subpackage -> the other subpackages it imports."""
    folded: Dict[str, Set[str]] = defaultdict(set)
    for module, targets in graph.items():
        folded[_layer(module)].update(_layer(t) for t in targets if _layer(t) != _layer(module))
    return dict(folded)


def format_package_graph(graph: Dict[str, Set[str]]) -> str:
    """One line per package, ``weights -> files``, the packages importing nothing of osnet_zoo first."""
    packages = package_graph(graph)
    order = sorted(packages, key=lambda p: (len(packages[p]), p))
    return '\n'.join(f'{p} -> {", ".join(sorted(packages[p])) or "(nothing)"}' for p in order)


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


def test_a_parent_package_is_an_edge():
    """``from ..weights.hub import x`` runs ``weights/__init__.py`` first: the scan counts that edge, so a
    circle through a package's ``__init__`` is found; a module's own parents are not counted."""
    known = {m: Path() for m in ('osnet_zoo', 'osnet_zoo.a', 'osnet_zoo.a.x', 'osnet_zoo.b', 'osnet_zoo.b.y')}
    assert _with_parents('osnet_zoo.b.y', 'osnet_zoo.a.x', known) == ['osnet_zoo.a', 'osnet_zoo.a.x']
    assert _with_parents('osnet_zoo.a.x', 'osnet_zoo.a', known) == []
    assert _with_parents('osnet_zoo.a', 'osnet_zoo.a.x', known) == ['osnet_zoo.a.x']
    # a/__init__ imports a.x, which imports b.y, which imports a.x: only the parent edge b.y -> a closes it
    graph = {'osnet_zoo.a': {'osnet_zoo.a.x'}, 'osnet_zoo.a.x': {'osnet_zoo.b.y'},
             'osnet_zoo.b.y': set(_with_parents('osnet_zoo.b.y', 'osnet_zoo.a.x', known))}
    assert _cycles(graph) == [['osnet_zoo.a', 'osnet_zoo.a.x', 'osnet_zoo.b.y']]
    # and the same graph scanned from source: a planted package
    tree = ast.parse('from ..a.x import f\n')
    targets = _targets('osnet_zoo.b.y', Path('b/y.py'), tree.body[0], known)
    assert _with_parents('osnet_zoo.b.y', targets[0], known) == ['osnet_zoo.a', 'osnet_zoo.a.x']


def test_the_package_graph_names_packages_and_clis():
    graph = {'osnet_zoo.weights.hub': {'osnet_zoo.files'}, 'osnet_zoo.weights.__main__': {'osnet_zoo.models'},
             'osnet_zoo.models.osnet': {'osnet_zoo.weights', 'osnet_zoo.weights.hub', 'osnet_zoo.models.genotype'},
             'osnet_zoo.files': set(), 'osnet_zoo': {'osnet_zoo.models'}}
    assert package_graph(graph) == {'weights': {'files'}, 'weights.__main__': {'models'}, 'models': {'weights'},
                                    'files': set(), 'osnet_zoo': {'models'}}
    assert format_package_graph(graph).splitlines()[0] == 'files -> (nothing)'


# Each of these is imported first, before osnet_zoo/__init__.py runs: none may depend on the order of the imports
# there (a circle that order hides fails here).
FIRST_IMPORTS = ['osnet_zoo.models', 'osnet_zoo.models.osnet', 'osnet_zoo.models.torchreid_layout',
                 'osnet_zoo.weights', 'osnet_zoo.weights.loading', 'osnet_zoo.weights.hub', 'osnet_zoo.publish.convert',
                 'osnet_zoo.data', 'osnet_zoo.data.datasets', 'osnet_zoo.data.datasets.synthetic',
                 'osnet_zoo.data.synthetic_small', 'osnet_zoo.metrics', 'osnet_zoo.metrics.cuhk03',
                 'osnet_zoo.metrics.rank', 'osnet_zoo.evaluation', 'osnet_zoo.evaluation.labelled',
                 'osnet_zoo.models.builder', 'osnet_zoo.models.folder', 'osnet_zoo.models.run_record',
                 'osnet_zoo.precision', 'osnet_zoo.publish', 'osnet_zoo.inference', 'osnet_zoo.train', 'osnet_zoo.nas']

# Run in one fresh interpreter: the third-party libraries are imported once, then each target is imported in a
# forked child that holds no osnet_zoo module yet. ``import osnet_zoo.x`` would run osnet_zoo/__init__.py first,
# so the root package is registered without running its __init__, which runs after the target instead.
_IMPORT_FIRST = r"""
import importlib, importlib.util, os, sys
import numpy, PIL.Image, timm, torch, torchvision, yaml  # noqa: F401 (third-party only, shared by the forks)
root, failed = sys.argv[1], []
for target in sys.argv[2:]:
    pid = os.fork()
    if pid == 0:
        try:
            spec = importlib.util.spec_from_file_location(
                'osnet_zoo', os.path.join(root, '__init__.py'), submodule_search_locations=[root])
            package = sys.modules['osnet_zoo'] = importlib.util.module_from_spec(spec)
            importlib.import_module(target)
            spec.loader.exec_module(package)
        except BaseException as e:
            print(f'{target}: {type(e).__name__}: {e}', flush=True)
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def test_each_package_imports_first():
    child = run_python('-c', _IMPORT_FIRST, PACKAGE, *FIRST_IMPORTS)
    assert child.returncode == 0, child.stderr[-2000:]
    assert not child.stdout.strip(), 'imported first, these fail:\n' + child.stdout


# What ``import osnet_zoo`` may load: a tracker imports it to get a model (issue #32).
RUNTIME_MODULE_LIMIT = 20
NOT_IN_THE_RUNTIME = ('osnet_zoo.data', 'osnet_zoo.train', 'osnet_zoo.engine', 'osnet_zoo.nas', 'osnet_zoo.inference',
                      'osnet_zoo.publish', 'osnet_zoo.models.folder', 'osnet_zoo.evaluation', 'gdown')

_LOADED_MODULES = r"""
import json, sys
import osnet_zoo
print(json.dumps(sorted(m for m in sys.modules if m == 'gdown' or m.split('.')[0] == 'osnet_zoo')))
"""


def _loaded_by(code: str) -> List[str]:
    child = run_python('-c', code)
    assert child.returncode == 0, child.stderr[-2000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_import_osnet_zoo_loads_the_small_runtime():
    """A fresh ``import osnet_zoo`` registers the models and the weights they load, and nothing else of ours:
    no dataset reader, no training, no NAS, no publishing, no gdown."""
    loaded = _loaded_by(_LOADED_MODULES)
    ours = [m for m in loaded if m.startswith('osnet_zoo')]
    assert 'osnet_zoo.models.osnet' in ours and 'osnet_zoo.weights.hub' in ours
    assert len(ours) <= RUNTIME_MODULE_LIMIT, f'{len(ours)} modules: {ours}'
    heavy = [m for m in loaded if any(m == h or m.startswith(h + '.') for h in NOT_IN_THE_RUNTIME)]
    assert not heavy, f'import osnet_zoo loads {heavy}'


def test_lazy_names_load_when_used():
    """The names the root exports lazily (the extractor) arrive on first access, and so does a subpackage."""
    code = _LOADED_MODULES.replace('print(', 'print(osnet_zoo.FeatureExtractor.__module__, '
                                             'osnet_zoo.inference.export.__name__, file=sys.stderr)\nprint(', 1)
    loaded = _loaded_by(code)
    assert 'osnet_zoo.inference.extractor' in loaded and 'osnet_zoo.inference.export' in loaded
    child = run_python('-c', 'import osnet_zoo; osnet_zoo.no_such_name')
    assert "module 'osnet_zoo' has no attribute 'no_such_name'" in child.stderr


def test_the_scan_counts_lazy_exports_as_imports():
    tree = ast.parse("_LAZY_EXPORTS = {'FeatureExtractor': '.inference', 'x': '..data.images'}\n")
    assert _lazy_targets('osnet_zoo.models', PACKAGE / 'models' / '__init__.py', tree) == [
        'osnet_zoo.models.inference', 'osnet_zoo.data.images']
    graph, _ = _scan()
    assert 'osnet_zoo.inference' in graph['osnet_zoo']


def test_training_inference_and_engine_do_not_import_publishing():
    """Publishing (osnet_zoo/publish/) sits beside the runtime: no module of train, inference or engine imports it,
    directly or through another module (a trained run writes its model folder with models.folder)."""
    graph, _ = _scan()
    assert 'osnet_zoo.models.folder' in graph['osnet_zoo.train.final']

    def reaches(module: str, seen: Set[str]) -> Set[str]:
        for target in graph.get(module, ()):
            if target not in seen:
                seen.add(target)
                reaches(target, seen)
        return seen

    for module in graph:
        if module.split('.')[1:2] in (['train'], ['inference'], ['engine']) and not module.endswith('__main__'):
            publishing = sorted(t for t in reaches(module, set()) if t.startswith('osnet_zoo.publish'))
            assert not publishing, f'{module} imports {publishing}'


def _timm_create_model_calls() -> List[str]:
    """``path:line`` of each ``timm.create_model(...)`` call in the package (``from timm import create_model`` too)."""
    found = []
    for path in sorted(PACKAGE.rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            func = node.func if isinstance(node, ast.Call) else None
            direct = isinstance(func, ast.Attribute) and func.attr == 'create_model' and \
                isinstance(func.value, ast.Name) and func.value.id == 'timm'
            imported = isinstance(node, ast.ImportFrom) and node.module == 'timm' and \
                any(a.name == 'create_model' for a in node.names)
            if direct or imported:
                found.append(f'{path.relative_to(PACKAGE.parent)}:{node.lineno}')
    return found


def test_one_model_builder():
    """Networks are built by models/builder.py; besides it only the create_osnet factory (timm's registry for
    the registered widths) calls timm.create_model."""
    calls = _timm_create_model_calls()
    assert len(calls) <= 3, calls
    assert {c.split(':')[0] for c in calls} <= {'osnet_zoo/models/builder.py', 'osnet_zoo/models/factory.py'}, calls


def _precision_tables() -> List[str]:
    """``path:line`` of each literal naming the three precisions ('fp32', 'bf16', 'fp16': a dict, tuple or list)."""
    found = []
    for path in sorted(PACKAGE.rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            items = node.keys if isinstance(node, ast.Dict) else getattr(node, 'elts', None) \
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else None
            names = {i.value for i in items or () if isinstance(i, ast.Constant)}
            if {'fp32', 'bf16', 'fp16'} <= names:
                found.append(f'{path.relative_to(PACKAGE.parent)}:{node.lineno}')
    return found


def test_one_precision_table():
    """The precisions are listed once (osnet_zoo/precision.py); training's loop takes its autocast dtype from
    there, not from evaluation."""
    assert _precision_tables() == ['osnet_zoo/precision.py:14']
    graph, _ = _scan()
    assert 'osnet_zoo.precision' in graph['osnet_zoo.engine.loop']
    assert not any(t.startswith('osnet_zoo.evaluation') for t in graph['osnet_zoo.engine.loop'])


MAX_FUNCTION_LINES = 80


def _long_functions(root: Path = PACKAGE, limit: int = MAX_FUNCTION_LINES) -> List[str]:
    """``path:line name: N lines`` for each function (def line to last line) longer than ``limit``."""
    found = []
    for path in sorted(root.rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f'{path.relative_to(root.parent)}:{node.lineno} {node.name}: {length} lines')
    return found


def test_no_function_is_longer_than_80_lines():
    long = _long_functions()
    assert not long, f'split these into named steps (at most {MAX_FUNCTION_LINES} lines each):\n' + '\n'.join(long)


def _function(name: str, lines: int, indent: str = '') -> str:
    """Source of a function ``lines`` long, def line and return line included."""
    body = ''.join(f'{indent}    x{i} = {i}\n' for i in range(lines - 2))
    return f'{indent}def {name}():\n{body}{indent}    return 0\n'


def test_the_length_check_finds_a_long_function(tmp_path):
    package = tmp_path / 'pkg'
    package.mkdir()
    limit = MAX_FUNCTION_LINES
    (package / 'long.py').write_text(f'import os\n\n\n{_function("too_long", limit + 1)}\n\n{_function("fits", limit)}')
    (package / 'method.py').write_text(f'class A:\n{_function("fits", limit, "    ")}')
    assert _long_functions(package) == [f'pkg/long.py:4 too_long: {limit + 1} lines']


if __name__ == '__main__':
    modules = _scan()[0]
    print(format_package_graph(modules))
    cycles = _cycles(modules)
    print(f'\n{len(cycles)} module import circles' + ''.join('\n  ' + ' <-> '.join(c) for c in cycles))
    package_cycles = _cycles(package_graph(modules))
    print(f'{len(package_cycles)} package circles')
    for cycle in package_cycles:  # and the module edges behind it
        print('  ' + ' <-> '.join(cycle))
        for module, targets in sorted(modules.items()):
            for target in sorted(targets):
                if _layer(module) in cycle and _layer(target) in cycle and _layer(module) != _layer(target):
                    print(f'    {module} -> {target}')
