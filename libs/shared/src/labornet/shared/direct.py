"""Statements of the hot paths run on the database driver, inside the session's transaction (ADR 38).

SQLAlchemy runs a statement built once in about 300–380 µs of Python on PostgreSQL (the session, the execution
context, the cursor adapter and its greenlet hand-offs, the result's rows), the driver itself in about 100 µs; a
transfer's step runs a dozen statements, an inbox run or an outbox write several more. A :class:`Direct` statement
is still written with SQLAlchemy Core and compiled by it, once for each set of parameter names; what runs at
execution is what SQLAlchemy would run: the same SQL, the same parameter conversions (JSON written by the dialect's
serializer, defaults of the columns not given), the same result conversions, on the connection and in the
transaction the session holds. A driver error becomes the error SQLAlchemy raises for it (``IntegrityError``,
``OperationalError`` ... with the driver's ``sqlstate``), and a lost connection is invalidated as SQLAlchemy
invalidates it, so callers and the inbox's retries cannot tell the two paths apart.

PostgreSQL (asyncpg) only: on any other database the session runs the statement as usual (SQLite's statements
wait for its driver's thread, which costs more than SQLAlchemy's layer above it).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import NoResultFound
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable, operators, visitors
from sqlalchemy.sql.elements import BinaryExpression, BindParameter
from sqlalchemy.util import await_only, greenlet_spawn

DIRECT_DIALECTS = frozenset({"postgresql"})
_ROWCOUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")


@dataclass(frozen=True)
class Rows:
    """What a statement answered: its rows (each read by column name: ``row["id"]``) and the rows it touched."""

    rows: Sequence[Any]
    rowcount: int

    def first(self) -> Any | None:
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any | None:
        """The first column of the first row (None without rows)."""
        return next(iter(self.rows[0].values())) if self.rows else None

    def scalar_one(self) -> Any:
        """The first column of the one row (an error if there is not exactly one)."""
        if len(self.rows) != 1:
            raise NoResultFound(f"one row wanted, {len(self.rows)} found")
        return next(iter(self.rows[0].values()))

    def scalars(self) -> list[Any]:
        """The first column of every row."""
        return [next(iter(row.values())) for row in self.rows]


def _list_as_array(element: Any, **_: Any) -> Any:
    """``column IN (:list)`` (an expanding parameter, rendered by SQLAlchemy for each length of the list) as
    ``column = ANY(:list)``, one array parameter: one statement whatever the length, as the driver runs it."""
    if (
        isinstance(element, BinaryExpression)
        and element.operator is operators.in_op
        and isinstance(element.right, BindParameter)
        and element.right.expanding
    ):
        return element.left == any_(bindparam(element.right.key, type_=ARRAY(element.left.type)))
    return None


class _Plan:
    """A statement compiled for one dialect and one set of parameter names."""

    def __init__(self, statement: Any, dialect: Dialect, names: frozenset[str] | None) -> None:
        statement = visitors.replacement_traverse(statement, {}, _list_as_array)
        compiled = statement.compile(
            dialect=dialect, column_keys=sorted(names) if names is not None else None, for_executemany=True
        )
        if compiled.positiontup is None:
            raise TypeError(f"{dialect.name}: only positional parameters are supported")
        expanding = [name for name, bind in compiled.binds.items() if bind.expanding]
        if expanding:
            raise TypeError(f"expanding parameters ({', '.join(expanding)}) outside `IN` need SQLAlchemy")
        self.sql: str = compiled.string
        self.returns_rows = bool(compiled.returning) or bool(getattr(statement, "is_select", False))
        # per position: (the parameter's name, its value when not given, its conversion)
        defaults = self._defaults(compiled)
        self.slots: list[tuple[str, Callable[[], Any] | None, Callable[[Any], Any] | None]] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            fixed = defaults.get(name)
            if fixed is None and not bind.required:  # a value written into the statement (None included)
                fixed = functools.partial(getattr, bind, "effective_value")
            self.slots.append((name, fixed, processor))
        self.columns = list(statement.exported_columns) if self.returns_rows else []
        self.processors: list[Callable[[Any], Any] | None] | None = None

    @staticmethod
    def _defaults(compiled: Any) -> dict[str, Callable[[], Any]]:
        """The Python-side defaults SQLAlchemy computes for columns not given (``default=``, ``onupdate=``)."""
        defaults: dict[str, Callable[[], Any]] = {}
        for columns, attribute in ((compiled.insert_prefetch, "default"), (compiled.update_prefetch, "onupdate")):
            for column in columns:
                default = getattr(column, attribute)
                if default is None:
                    continue
                if default.is_callable:
                    defaults[column.key] = functools.partial(default.arg, None)
                elif default.is_scalar:
                    defaults[column.key] = functools.partial(_same, default.arg)
                else:
                    raise TypeError(f"column {column.key}: a default of kind {type(default).__name__} needs SQLAlchemy")
        return defaults

    def arguments(self, parameters: Mapping[str, Any]) -> list[Any]:
        arguments = []
        for name, fixed, processor in self.slots:
            if name in parameters:
                value = parameters[name]
            elif fixed is not None:
                value = fixed()
            else:
                raise KeyError(f"statement parameter {name!r} was not given")
            # None too, as SQLAlchemy does: a JSON column writes it as JSON's null, not SQL's NULL
            arguments.append(processor(value) if processor is not None else value)
        return arguments

    async def result_processors(self, driver: Any, dialect: Dialect) -> list[Callable[[Any], Any] | None]:
        """What SQLAlchemy converts in each column read, decided by the driver's type of the column (asked once)."""
        if self.processors is None:
            attributes = (await driver.prepare(self.sql)).get_attributes()
            self.processors = [
                column.type.dialect_impl(dialect).result_processor(dialect, attribute.type.oid)
                for column, attribute in zip(self.columns, attributes, strict=True)
            ]
        return self.processors


class Direct:
    """A Core statement (built once, its values given as parameters) run on the driver on PostgreSQL.

    ``execute`` and ``executemany`` in coroutines; ``execute_sync`` and ``executemany_sync`` from a session event
    (inside the transaction's greenlet). Parameters are the statement's bound parameters by name; for an INSERT or
    UPDATE of a whole table the columns given are those set, as with the session (a plan per set of names)."""

    def __init__(self, statement: Executable | Mapping[str, Executable]) -> None:
        # one statement, or one per dialect (``for_each_dialect``: an INSERT's ON CONFLICT)
        self.statements: Mapping[str, Executable] | None = statement if isinstance(statement, Mapping) else None
        self.statement: Executable | None = None if isinstance(statement, Mapping) else statement
        self._plans: dict[tuple[str, frozenset[str] | None], _Plan] = {}

    def of(self, dialect: Dialect) -> Executable:
        """The statement run on ``dialect``."""
        return self.statement if self.statements is None else self.statements[dialect.name]  # type: ignore[return-value]

    def _plan(self, dialect: Dialect, parameters: Mapping[str, Any]) -> _Plan:
        statement = self.of(dialect)
        # as SQLAlchemy does, an INSERT or UPDATE also sets the columns named by the parameters: a plan per set of names
        names = None if getattr(statement, "is_select", False) else frozenset(parameters)
        key = (dialect.name, names)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _Plan(statement, dialect, names)
        return plan

    async def execute(self, session: AsyncSession, parameters: Mapping[str, Any] | None = None) -> Rows:
        parameters = parameters or {}
        connection = await _connection(session)
        dialect = connection.dialect
        if dialect.name not in DIRECT_DIALECTS:
            return _rows_of(await session.execute(self.of(dialect), parameters))
        plan = self._plan(dialect, parameters)
        return await _run(connection, plan, plan.arguments(parameters), False)

    async def executemany(self, session: AsyncSession, parameters: Sequence[Mapping[str, Any]]) -> None:
        if not parameters:
            return
        connection = await _connection(session)
        dialect = connection.dialect
        if dialect.name not in DIRECT_DIALECTS:
            await session.execute(self.of(dialect), list(parameters))
            return
        plan = self._plan(dialect, parameters[0])
        await _run(connection, plan, *_batch(plan, parameters))

    def execute_sync(self, session: Session, parameters: Mapping[str, Any] | None = None) -> Rows:
        parameters = parameters or {}
        connection = session.connection()
        if connection.dialect.name not in DIRECT_DIALECTS:
            return _rows_of(session.execute(self.of(connection.dialect), parameters))
        plan = self._plan(connection.dialect, parameters)
        return await_only(_run(connection, plan, plan.arguments(parameters), False))

    def executemany_sync(self, session: Session, parameters: Sequence[Mapping[str, Any]]) -> None:
        if not parameters:
            return
        connection = session.connection()
        if connection.dialect.name not in DIRECT_DIALECTS:
            session.execute(self.of(connection.dialect), list(parameters))
            return
        plan = self._plan(connection.dialect, parameters[0])
        await_only(_run(connection, plan, *_batch(plan, parameters)))


async def _connection(session: AsyncSession) -> Connection:
    """The connection of the session's transaction: read from the session when it holds one already (asking
    ``AsyncSession.connection()`` passes through a greenlet, about a third of what a direct statement costs)."""
    sync_session = session.sync_session
    transaction = sync_session.get_transaction()
    if transaction is not None and transaction._connections:  # the connection is held: getting it does no I/O
        return sync_session.connection()
    connection = (await session.connection()).sync_connection
    assert connection is not None
    return connection


def _batch(plan: _Plan, parameters: Sequence[Mapping[str, Any]]) -> tuple[list[Any], bool]:
    """The driver's arguments for ``parameters`` and whether to send them as a batch: one row goes as a single
    statement (asyncpg's batch costs more than a statement for one row, 93–102 against 65–75 µs here)."""
    if len(parameters) == 1:
        return plan.arguments(parameters[0]), False
    return [plan.arguments(p) for p in parameters], True


def _same(value: Any) -> Any:
    return value


def _rows_of(result: Any) -> Rows:
    return Rows(result.mappings().all() if result.returns_rows else [], result.rowcount)


async def _run(connection: Connection, plan: _Plan, arguments: list[Any], many: bool) -> Rows:
    """Run ``plan`` on the driver of ``connection``, in its transaction (begun here if no statement began it)."""
    adapted = connection.connection.dbapi_connection
    driver = adapted.driver_connection  # type: ignore[union-attr]
    if connection._has_events or connection.engine._has_events:
        # the engine's listeners (statement logs, tracing, tests that count round trips) see it as any other
        connection.dispatch.before_cursor_execute(connection, None, plan.sql, arguments, None, many)
    try:
        async with adapted._execute_mutex:  # type: ignore[union-attr]  # the adapter's: one statement at a time
            if adapted._transaction is None:  # type: ignore[union-attr]  # SQLAlchemy's BEGIN is lazy
                await adapted._start_transaction()  # type: ignore[union-attr]
            if many:
                await driver.executemany(plan.sql, arguments)
                return Rows((), -1)
            if not plan.returns_rows:
                status = await driver.execute(plan.sql, *arguments)
                matched = _ROWCOUNT.match(status or "")
                return Rows((), int(matched.group(1)) if matched else -1)
            processors = await plan.result_processors(driver, connection.dialect)
            rows = await driver.fetch(plan.sql, *arguments)
    except Exception as error:
        await _raise_as_sqlalchemy(connection, adapted, error, plan.sql, arguments)
        raise  # unreachable: the above always raises
    if any(processors):
        rows = [_Row(row, processors) for row in rows]
    return Rows(rows, len(rows))


async def _raise_as_sqlalchemy(
    connection: Connection, adapted: Any, error: Exception, sql: str, arguments: list[Any]
) -> None:
    """Raise what SQLAlchemy raises for ``error``: the adapter's translation of the driver's exception, wrapped and
    (a lost connection) invalidated by the connection's own handling."""
    try:
        adapted._handle_exception(error)
    except Exception as translated:
        await greenlet_spawn(connection._handle_dbapi_exception, translated, sql, arguments, None, None)
    raise error


class _Row:
    """A driver row with SQLAlchemy's conversions applied, read by name or position like the driver's."""

    __slots__ = ("_keys", "_values")

    def __init__(self, record: Any, processors: list[Callable[[Any], Any] | None]) -> None:
        self._keys = list(record.keys())
        self._values = [
            processor(value) if processor is not None else value
            for value, processor in zip(record.values(), processors, strict=True)
        ]

    def __getitem__(self, key: int | str) -> Any:
        return self._values[key] if isinstance(key, int) else self._values[self._keys.index(key)]

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self._keys else default

    def keys(self) -> list[str]:
        return list(self._keys)

    def values(self) -> list[Any]:
        return list(self._values)

    def items(self) -> list[tuple[str, Any]]:
        return list(zip(self._keys, self._values, strict=True))
