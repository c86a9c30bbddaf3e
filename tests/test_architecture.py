"""The dependency rules of DESIGN.md, checked on the source: who may import whom."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import chronoq

PACKAGE = Path(chronoq.__file__).parent
STORE = PACKAGE / "_store"
ROLES = ("producer", "timer", "consumer")


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
    for role in ROLES:
        for path in _modules(role):
            for other in ROLES:
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


def test_the_lifecycle_rules_sit_below_the_roles_that_share_them() -> None:
    """The producer and the timer's intake both apply ``chronoq.lifecycle``: it imports neither
    of them, nor aio-pika's side (the producer never reaches the broker)."""
    imports = _imports(PACKAGE / "lifecycle.py")
    assert not {m for m in imports if m.startswith(tuple(f"chronoq.{r}" for r in (*ROLES, "_broker")))}, imports


def test_sql_runs_only_in_the_store() -> None:
    """Roles call the store; only `_store` holds SQL (the demo's own table is example user code)."""
    paths = [path for role in ("producer", "timer", "consumer", "schemas", "_broker") for path in _modules(role)]
    for path in [*paths, PACKAGE / "lifecycle.py"]:
        text = path.read_text()
        for keyword in ("SELECT ", "INSERT INTO", "UPDATE chronoq", "DELETE FROM"):
            assert keyword not in text, f"{path.relative_to(PACKAGE)} contains SQL ({keyword.strip()})"


def _query_names(path: Path) -> set[str]:
    """The names a module passes to ``query(...)``."""
    return {node.args[0].value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "query"
            and node.args and isinstance(node.args[0], ast.Constant)}


def _defined_queries(sql_file: Path) -> set[str]:
    return set(re.findall(r"^-- name: (\w+)\s*$", sql_file.read_text(), re.MULTILINE))


#: Queries a store module runs from another module's file, and why.
BORROWED_QUERIES = {
    "bench.py": {"claim_due"},  # the benchmark shows the plan of the timer's own claim
}


def test_each_store_module_runs_the_queries_of_the_sql_file_named_after_it() -> None:
    """``wheel.py`` runs ``queries/wheel.sql`` and nothing else: a query is found next to the
    code that runs it, by the module's name."""
    sql_files = {path.stem: path for path in (STORE / "queries").glob("*.sql")}
    for stem in sql_files:
        assert (STORE / f"{stem}.py").exists(), f"queries/{stem}.sql has no module _store/{stem}.py"
    for path in sorted(STORE.glob("*.py")):
        names = _query_names(path) - BORROWED_QUERIES.get(path.name, set())
        if names:
            assert path.stem in sql_files, f"_store/{path.name} runs queries but has no queries/{path.stem}.sql"
            assert names <= _defined_queries(sql_files[path.stem]), (path.name, names - _defined_queries(sql_files[path.stem]))


_SQL_TEXT = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|ALTER|WITH|CREATE|DROP|VACUUM|CHECKPOINT|EXPLAIN)\s")
#: The one prefix written in Python: the benchmark explains the timer's own claim statement,
#: loaded by name, rather than a copy of it that could drift.
EXPLAIN_PREFIX = ("bench.py", "EXPLAIN (ANALYZE, BUFFERS) ")


def test_store_modules_hold_no_sql_text_of_their_own() -> None:
    """Statements live in ``queries/*.sql``, loaded by name; a Python string is never SQL."""
    for path in sorted(STORE.glob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                      and n.body and isinstance(n.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and (path.name, node.value) != EXPLAIN_PREFIX:
                assert not _SQL_TEXT.match(node.value), f"_store/{path.name}:{node.lineno} holds SQL: {node.value[:60]!r}"


def test_no_pickle_anywhere() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert not {m for m in _imports(path) if m.split(".")[0] in ("pickle", "dill", "cloudpickle")}, path
