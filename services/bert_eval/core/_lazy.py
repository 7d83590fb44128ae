"""Lazy public names for the core's subpackages: `from bert_eval.core.search import Ladder` imports only
`core/search/asha.py`, so importing one light module of a subpackage never pulls in torch through another."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Module-level `__getattr__` and `__dir__` for `package` that import `name` from the submodule
    `exports[name]` on first access (PEP 562)."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
