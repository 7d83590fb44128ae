"""Every public definition in the documented modules says what it does.

A public definition is a module-level function or class whose name does not start with ``_``, and a method of
such a class whose name does not start with ``_`` (dunders such as ``__init__`` are not counted: the class's
docstring states how to build it). Nested functions and private modules' internals are not counted.

``DOCUMENTED`` lists the modules (or whole packages, ending in ``/``) where every public definition must carry a
docstring and every line fits in `MAX_LINE` characters; it names the whole package.

Run as a script for the count over the whole package (or any paths)::

    python tests/unit/test_docstrings.py               # every module under services/bert_eval
    python tests/unit/test_docstrings.py --documented  # only the modules DOCUMENTED lists
    python tests/unit/test_docstrings.py --list PATH   # also name each undocumented definition
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "bert_eval"

# Paths relative to PACKAGE; an entry ending in "/" covers every module under that folder. "./" is the whole
# package: every public definition of bert_eval says what it does.
DOCUMENTED: tuple[str, ...] = ("./",)
# The documented modules also keep their lines within this many characters (as ruff's line length does).
MAX_LINE = 120


@dataclass(frozen=True)
class PublicDefinition:
    """One public function, class or method: where it is and whether it has a docstring."""

    path: Path
    qualname: str
    line: int
    documented: bool

    def __str__(self) -> str:
        where = self.path.relative_to(PACKAGE.parent) if self.path.is_relative_to(PACKAGE.parent) else self.path
        return f"{where}:{self.line}: {self.qualname}"


_Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _is_public(name: str) -> bool:
    return not name.startswith("_")


def public_definitions(path: Path) -> Iterator[PublicDefinition]:
    """Yield the public module-level functions and classes of ``path``, and the public methods of its public
    classes, in source order."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if not isinstance(node, _Definition) or not _is_public(node.name):
            continue
        yield PublicDefinition(path, node.name, node.lineno, ast.get_docstring(node) is not None)
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef) and _is_public(member.name):
                    documented = ast.get_docstring(member) is not None
                    yield PublicDefinition(path, f"{node.name}.{member.name}", member.lineno, documented)


def modules(entries: tuple[str, ...] | list[str], root: Path = PACKAGE) -> list[Path]:
    """The Python modules named by ``entries`` (files, or folders ending in ``/``), relative to ``root``.

    Raises
    ------
    FileNotFoundError
        If an entry names no existing file or folder (a stale entry would silently check nothing).
    """
    found: list[Path] = []
    for entry in entries:
        target = root / entry
        if entry.endswith("/"):
            if not target.is_dir():
                raise FileNotFoundError(f"DOCUMENTED entry {entry!r}: no folder {target}; fix or drop the entry")
            found.extend(sorted(target.rglob("*.py")))
        else:
            if not target.is_file():
                raise FileNotFoundError(f"DOCUMENTED entry {entry!r}: no file {target}; fix or drop the entry")
            found.append(target)
    return found


def undocumented(paths: list[Path]) -> tuple[int, list[PublicDefinition]]:
    """Count the public definitions in ``paths``; return the total and those without a docstring."""
    definitions = [d for path in paths for d in public_definitions(path)]
    return len(definitions), [d for d in definitions if not d.documented]


def test_documented_modules_have_a_docstring_on_every_public_definition() -> None:
    total, missing = undocumented(modules(DOCUMENTED))
    assert total > 0
    assert not missing, "public definitions without a docstring:\n" + "\n".join(map(str, missing))


def test_documented_modules_keep_lines_within_120_characters() -> None:
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {len(line)} characters"
        for path in modules(DOCUMENTED)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if len(line) > MAX_LINE
    ]
    assert not long, f"lines over {MAX_LINE} characters (wrap them by hand):\n" + "\n".join(long)


def test_the_checker_finds_an_undocumented_function_method_and_class(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text(
        '"""A module."""\n'
        "def run(x):\n    return x\n"
        "def _helper():\n    return 1\n"
        'class Store:\n    """A store."""\n'
        "    def __init__(self):\n        pass\n"
        "    def latest(self):\n        return None\n"
        "    def _scan(self):\n        return None\n"
        "class Plain:\n    pass\n"
        'async def fetch():\n    """Fetch."""\n',
        encoding="utf-8",
    )
    total, missing = undocumented(modules(["sample.py"], root=tmp_path))
    assert total == 5  # run, Store, Store.latest, Plain, fetch
    assert [d.qualname for d in missing] == ["run", "Store.latest", "Plain"]


def test_a_stale_entry_is_an_error_not_a_silent_pass(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gone.py"):
        modules(["gone.py"], root=tmp_path)


def main() -> None:
    """Print the count of public definitions without a docstring under the given paths (default: the package)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("paths", nargs="*", type=Path, default=[PACKAGE])
    parser.add_argument("--list", action="store_true", help="name each undocumented definition")
    parser.add_argument("--documented", action="store_true", help="count only the modules DOCUMENTED lists")
    args = parser.parse_args()
    if args.documented:
        files = modules(DOCUMENTED)
    else:
        files = [f for p in args.paths for f in (sorted(p.rglob("*.py")) if p.is_dir() else [p])]
    total, missing = undocumented(files)
    if args.list:
        print("\n".join(map(str, missing)))
    print(f"{len(missing)} of {total} public definitions have no docstring")


if __name__ == "__main__":
    main()
