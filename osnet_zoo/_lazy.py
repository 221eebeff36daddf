"""Names a package exports without importing them until first use (PEP 562's module ``__getattr__``).

``import osnet_zoo`` is what a tracker does to get a model, so the package root imports only the models (which
register into timm) and the weights they load; the extractor, the deployment tools and the rest are imported on
first access. A package lists such names in a ``_LAZY_EXPORTS`` dict (name -> relative module) and sets
``__getattr__, __dir__ = lazy_exports(__name__, _LAZY_EXPORTS, globals())``; tests/test_structure.py reads those
dicts as imports, so the import graph it checks still has every edge.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Mapping, Tuple

__all__ = ['lazy_exports']


def lazy_exports(package: str, exports: Mapping[str, str],
                 namespace: Dict[str, Any]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a name to the module (relative to
    ``package``) that defines it; a subpackage's own name imports it. A loaded name is cached in ``namespace``."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
        elif not name.startswith('__'):
            try:
                value = importlib.import_module(f'{package}.{name}')
            except ModuleNotFoundError as e:
                if e.name != f'{package}.{name}':
                    raise
                raise AttributeError(f'module {package!r} has no attribute {name!r}') from None
        else:
            raise AttributeError(f'module {package!r} has no attribute {name!r}')
        namespace[name] = value
        return value

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
