"""Writes that arrive together commit together: one transaction for the concurrent requests of one use case (ADR 41).

A node's API serves many requests at once, and each write used to be a transaction of its own: its ``BEGIN``, its
statements, its outbox row with the stream's counter, its ``COMMIT`` and the flush of the database's log. Under
load the requests queue for the stream's counter one behind the other, and every round trip is a system call on
both sides. :class:`GroupCommit` gathers the writes waiting at one moment and runs them in one transaction:

* A caller hands an item and awaits its result. If no writer runs, its item starts one; while the writer's
  transaction is in the database, the items that arrive wait and form the next batch (up to ``max_batch``). A
  lone request is written at once, as before: nothing waits for a batch to fill.
* ``write(session, items)`` does the work of every item in the one transaction and returns one result per item,
  in order. What it writes is visible to no one before the commit, and all of it after: each caller's result
  means its item is committed.
* **A batch that fails because of an item** (a constraint or a value the database refuses, a rule the use case
  raises for one row) is written again item by item, each in its own transaction: only the item at fault fails,
  with the error it raised alone; the others are written. A failure of the database itself (unreachable, busy, a
  lost connection, a pool with no connection to give, a transaction ended by a concurrent one:
  :func:`~labornet.shared.inbox.is_transient`) is not about one item: every caller of the batch gets it, and
  nothing of the batch was written.
* A caller that goes away (its request cancelled) before its item is taken into a batch leaves nothing written.
  Once taken, the item is written with its batch or not at all, whatever happens to its caller: the writer is a
  task of its own, never cancelled half-way by a request.

There is no task at rest: the writer ends when no item waits, and the next item starts another. A service stopping
waits for it (:meth:`GroupCommit.drain`, through ``Runtime.finishing``) before it stops its relay and its engine.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from prometheus_client import Histogram
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.shared.inbox import is_transient

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

BATCH_SIZES = Histogram(
    "labornet_group_commit_batch_size",
    "Writes committed together in one transaction, by use case",
    ["use_case"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)


def about_one_item(exc: Exception) -> bool:
    """Whether a batch's failure may come from one of its items (the batch is then written item by item to find
    it), rather than from the database, which would refuse every item alike."""
    return not (is_transient(exc) or isinstance(exc, PoolTimeout))


class GroupCommit(Generic[Item, Result]):
    """Concurrent writes of one use case, committed together (see the module)."""

    def __init__(
        self,
        name: str,
        sessions: async_sessionmaker[AsyncSession],
        write: Callable[[AsyncSession, Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = 64,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"a batch holds at least one item, not {max_batch}")
        self.name = name
        self.sessions = sessions
        self.write = write
        self.max_batch = max_batch
        self._waiting: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._sizes = BATCH_SIZES.labels(name)

    async def submit(self, item: Item) -> Result:
        """Write ``item`` with whatever else is waiting; its result once committed, or the error that stopped it."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None or self._writer.get_loop().is_closed():  # a writer in a closed loop never ends
            # in a context of its own: nothing of the request that started it (its trace) leaks into the others
            self._writer = asyncio.create_task(
                self._write_waiting(), name=f"group-commit-{self.name}", context=contextvars.Context()
            )
        return await future  # cancelled here: the writer leaves the item out if it has not taken it yet

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def drain(self) -> None:
        """Wait until every item handed so far is written or refused (a service stopping)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write_waiting(self) -> None:
        try:
            while self._waiting:
                batch: list[tuple[Item, asyncio.Future[Result]]] = []
                while self._waiting and len(batch) < self.max_batch:
                    entry = self._waiting.popleft()
                    if not entry[1].done():  # its caller went away before it was taken: it is not written
                        batch.append(entry)
                if batch:
                    await self._write_batch(batch)
        except BaseException as exc:  # the writer itself stopped (its loop closing): nobody may wait for ever
            while self._waiting:
                _settle(self._waiting.popleft()[1], error=exc)
            raise
        finally:
            self._writer = None

    async def _write_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            async with self.sessions() as session, session.begin():
                results = await self.write(session, [item for item, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and about_one_item(exc):
                log.warning("%s: a batch of %d failed (%s); writing its items one by one", self.name, len(batch), exc)
                for entry in batch:
                    await self._write_batch([entry])
                return
            for _, future in batch:
                _settle(future, error=exc)
            return
        except BaseException as exc:  # the writer cancelled (its loop closing): its callers are told, then it stops
            for _, future in batch:
                _settle(future, error=exc)
            raise
        self._sizes.observe(len(batch))
        if len(results) != len(batch):  # a defect of ``write``: its callers are told rather than left waiting
            defect = RuntimeError(f"{self.name}: {len(batch)} items written, {len(results)} results returned")
            for _, future in batch:
                _settle(future, error=defect)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


def _settle(
    future: asyncio.Future[Result], *, result: Result | None = None, error: BaseException | None = None
) -> None:
    """Give a caller its answer, unless it has gone away (its future cancelled, or its event loop closed)."""
    if future.done() or future.get_loop().is_closed():
        return
    if isinstance(error, Exception):
        future.set_exception(error)
    elif error is not None:  # the writer was cancelled: so is the caller's wait
        future.cancel()
    else:
        future.set_result(result)  # type: ignore[arg-type]
