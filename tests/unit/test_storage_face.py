"""`storage` has one face: the proxy imports what storage/__init__.py exports, never one of
its modules, so storage can be rearranged behind it without touching the proxy."""

from __future__ import annotations

import ast
from pathlib import Path

import storage

PROXY = Path(__file__).resolve().parents[2] / "proxy"


def direct_storage_imports(path: Path) -> list[str]:
    """The imports in one file that reach past storage's package, as `line: module`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            if node.module == "storage":
                # `from storage import store` reaches a module as well.
                modules = [f"storage.{a.name}" for a in node.names if a.name not in storage.__all__]
        else:
            continue
        found += [f"{node.lineno}: {module}" for module in modules if module.startswith("storage.")]
    return found


def test_the_proxy_imports_storage_only_through_its_package() -> None:
    files = sorted(PROXY.rglob("*.py"))
    assert len(files) > 20  # the walk found the proxy package, subpackages included
    direct = {str(path.relative_to(PROXY.parent)): direct_storage_imports(path) for path in files}
    assert {path: lines for path, lines in direct.items() if lines} == {}
    assert any("from storage import" in path.read_text() for path in files)


def test_the_check_finds_every_spelling_of_a_direct_import(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        "import storage\n"
        "import storage.store\n"
        "from storage.entry import EntryMeta\n"
        "from storage import lookup, Store\n"
        "def later():\n"
        "    from storage.keylock import KeyLock\n"
    )
    assert direct_storage_imports(source) == [
        "2: storage.store",
        "3: storage.entry",
        "4: storage.lookup",
        "6: storage.keylock",
    ]


def test_every_name_the_package_exports_exists() -> None:
    assert all(hasattr(storage, name) for name in storage.__all__)
