"""The dependency rules of DESIGN.md, checked on the source: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

import chronoq

PACKAGE = Path(chronoq.__file__).parent


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _modules(subpackage: str) -> list[Path]:
    return sorted((PACKAGE / subpackage).rglob("*.py"))


def test_roles_never_import_each_other() -> None:
    roles = ("producer", "timer", "consumer")
    for role in roles:
        for path in _modules(role):
            for other in roles:
                if other != role:
                    bad = {m for m in _imports(path) if m.startswith(f"chronoq.{other}")}
                    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_only_the_broker_package_imports_aio_pika_and_the_producer_never_reaches_it() -> None:
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        uses = {m for m in _imports(path) if m.split(".")[0] in ("aio_pika", "aiormq", "pamqp")}
        if rel.parts[0] != "_broker":
            assert not uses, f"{rel} imports {uses}"
    for path in _modules("producer"):
        assert not {m for m in _imports(path) if m.startswith("chronoq._broker")}, path


def test_schemas_do_no_io() -> None:
    for path in _modules("schemas"):
        heavy = {m for m in _imports(path) if m.split(".")[0] in ("asyncpg", "aio_pika", "chronoq")}
        allowed = {m for m in heavy if m.startswith(("chronoq.schemas", "chronoq.errors"))}
        assert heavy == allowed, f"{path.name} imports {heavy - allowed}"


def test_sql_runs_only_in_the_store() -> None:
    """Roles call the store; only `_store` holds SQL (the demo's own table is example user code)."""
    for role in ("producer", "timer", "consumer", "schemas", "_broker"):
        for path in _modules(role):
            text = path.read_text()
            for keyword in ("SELECT ", "INSERT INTO", "UPDATE chronoq", "DELETE FROM"):
                assert keyword not in text, f"{path.relative_to(PACKAGE)} contains SQL ({keyword.strip()})"


def test_no_pickle_anywhere() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert not {m for m in _imports(path) if m.split(".")[0] in ("pickle", "dill", "cloudpickle")}, path
