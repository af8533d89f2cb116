"""Bulk import of vacancies as a job: the file is received to disk, then its rows are published in batches.

:meth:`ImportService.receive` reads the uploaded body chunk by chunk into a temporary file (never the whole file
in memory), checking as it goes that it is UTF-8 text, that a CSV header names the vacancy's columns and that
some row follows; then it records the import (``queued``) and hands it to :meth:`ImportService.work`, the one
background task that runs the imports of this node one after the other.

A run reads the file again row by row: each row is validated as ``POST /api/v1/vacancies`` validates a body (the
same draft model, the same brand and division checks, the row built by :meth:`VacancyService.new_vacancy`), and
every ``batch_rows`` rows read are one transaction: the valid rows inserted, their ``vacancy.published`` events
written to the outbox as the single API writes them, the subscriptions matched, and the import's progress — so
what the import says it published is exactly what is committed. In ``all-or-nothing`` mode a first pass
validates every row and nothing is published unless all are valid.

An import still queued or running when the service starts was interrupted by a restart: it is marked failed, and
its message says through which line the rows are published (the file can be sent again from the next line).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import io
import logging
import tempfile
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.jobs.adapters.brands import BrandRegisterUnavailable
from labornet.jobs.adapters.tables import vacancy_import
from labornet.jobs.domain.imports import (
    FORMATS,
    FileRefused,
    ImportMode,
    ImportState,
    ParsedRow,
    RowError,
    check_header,
    new_import_id,
    parse_rows,
)
from labornet.jobs.domain.vacancy import BrandNotUsable, BrandRef, check_brand
from labornet.jobs.service_layer.vacancies import VacancyService
from labornet.shared.problems import Problem

log = logging.getLogger(__name__)

HEADER_MAX_CHARS = 64 * 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


class Upload:
    """The body of an import as it arrives, written to a temporary file and checked on the way."""

    def __init__(self, file_format: str, directory: str | None = None) -> None:
        self.format = file_format
        self.file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed by the run
        self.size = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._lines = 1
        self._head = ""
        self.header: list[str] | None = None
        self._rows_follow = False

    def write(self, chunk: bytes, final: bool = False) -> None:
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            line = self._lines + chunk[: exc.start].count(b"\n")
            raise FileRefused(f"the file is not UTF-8 text: line {line} holds a byte that is not UTF-8") from exc
        self._lines += chunk.count(b"\n")
        self.size += len(chunk)
        self.file.write(chunk)
        if self.format == "csv" and self.header is None:
            self._head += text
            first, newline, rest = self._head.partition("\n")
            if not newline and not (final and self._head.strip()):
                if len(self._head) > HEADER_MAX_CHARS:
                    raise FileRefused(f"the first line is longer than {HEADER_MAX_CHARS} characters; it is no header")
                return  # the rest of the header is still to come (or the file is empty)
            try:
                self.header = check_header(next(csv.reader([first.lstrip("\ufeff")]), []))
            except csv.Error as exc:
                raise FileRefused(f"the header (line 1) is not readable as CSV: {exc}") from exc
            text, self._head = rest, ""
        self._rows_follow = self._rows_follow or bool(text.strip())

    def finish(self) -> None:
        self.write(b"", final=True)
        if not self._rows_follow:
            what = "no row follows the header" if self.header is not None else "the file has no row"
            raise FileRefused(f"nothing to import: {what}")

    def lines(self) -> Generator[str]:
        """The file's lines as text, read from the start (a UTF-8 byte order mark dropped)."""
        self.file.seek(0)
        text = io.TextIOWrapper(self.file, encoding="utf-8-sig", newline="")
        try:
            for line in text:  # noqa: UP028 - ``yield from`` would close the file when this generator is closed
                yield line
        finally:
            text.detach()

    def close(self) -> None:
        self.file.close()


@dataclass
class Progress:
    """What a run has read, found and published so far (written into the import's row with every batch)."""

    errors_kept: int
    rows_read: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0
    rows_published: int = 0
    published_through_line: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, errors: tuple[RowError, ...]) -> None:
        self.rows_rejected += 1
        room = self.errors_kept - len(self.errors)
        self.errors.extend(error.as_json() for error in errors[: max(room, 0)])

    def values(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_valid": self.rows_valid,
            "rows_rejected": self.rows_rejected,
            "rows_published": self.rows_published,
            "published_through_line": self.published_through_line,
            "errors": list(self.errors),
            "updated_at": utcnow(),
        }


@dataclass
class Accepted:
    id: str
    upload: Upload
    mode: ImportMode


class ImportService:
    def __init__(
        self,
        *,
        province: str,
        vacancies: VacancyService,
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession],
        batch_rows: int = 500,
        errors_kept: int = 100,
        spool_dir: str | None = None,
    ) -> None:
        self.province = province
        self.vacancies = vacancies
        self.sessions = sessions
        self.read_sessions = read_sessions
        self.batch_rows = batch_rows
        self.errors_kept = errors_kept
        self.spool_dir = spool_dir
        self.started_at = utcnow()
        self._queue: asyncio.Queue[Accepted] = asyncio.Queue()

    async def receive(
        self, chunks: AsyncIterator[bytes], media_type: str, mode: ImportMode, officer: str
    ) -> dict[str, Any]:
        """Receive a file into a temporary file and queue its import; :class:`FileRefused` when it cannot be one."""
        upload = Upload(FORMATS[media_type], self.spool_dir)
        try:
            async for chunk in chunks:
                upload.write(chunk)
            upload.finish()
            moment = utcnow()
            row = {
                "id": new_import_id(self.province),
                "officer": officer,
                "format": upload.format,
                "mode": mode.value,
                "state": ImportState.QUEUED.value,
                "bytes": upload.size,
                **Progress(self.errors_kept).values(),
                "message": None,
                "created_at": moment,
                "started_at": None,
                "updated_at": moment,
                "finished_at": None,
            }
            async with self.sessions() as session, session.begin():
                await session.execute(insert(vacancy_import).values(**row))
        except BaseException:
            upload.close()
            raise
        self._queue.put_nowait(Accepted(row["id"], upload, mode))
        return row

    async def find(self, import_id: str) -> dict[str, Any] | None:
        async with self.read_sessions() as session:
            found = (
                (await session.execute(select(vacancy_import).where(vacancy_import.c.id == import_id)))
                .mappings()
                .one_or_none()
            )
        return dict(found) if found is not None else None

    async def fail_interrupted(self) -> int:
        """Mark failed the imports a restart interrupted (queued or running, received before this start)."""
        async with self.sessions() as session, session.begin():
            stopped = (
                await session.execute(
                    select(vacancy_import.c.id, vacancy_import.c.state, vacancy_import.c.published_through_line).where(
                        vacancy_import.c.state.in_([ImportState.QUEUED.value, ImportState.RUNNING.value]),
                        vacancy_import.c.created_at < self.started_at,
                    )
                )
            ).all()
            for import_id, state, through_line in stopped:
                if state == ImportState.QUEUED.value or through_line == 0:
                    message = "the service restarted before this import published any row; send the file again"
                else:
                    message = (
                        f"the service restarted during this import: the valid rows through line {through_line} "
                        f"are published; send the rows after line {through_line} again"
                    )
                await self._finish(session, import_id, ImportState.FAILED, message)
        if stopped:
            log.warning("%d vacancy import(s) interrupted by a restart marked failed", len(stopped))
        return len(stopped)

    async def work(self) -> None:
        """Run the queued imports one after the other (the service's background task)."""
        try:
            await self.fail_interrupted()
        except Exception:
            log.exception("could not mark the imports a restart interrupted; the next start will")
        while True:
            accepted = await self._queue.get()
            try:
                await self.run(accepted)
            except Exception:  # the database failed under the run: the import stays as it was recorded
                log.exception("vacancy import %s could not be run or recorded", accepted.id)
            finally:
                accepted.upload.close()

    async def run(self, accepted: Accepted) -> None:
        progress = Progress(self.errors_kept)
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(vacancy_import)
                .where(vacancy_import.c.id == accepted.id)
                .values(state=ImportState.RUNNING.value, started_at=utcnow(), updated_at=utcnow())
            )
        try:
            brands: dict[str, BrandRef | str | None] = {}
            if accepted.mode is ImportMode.ALL_OR_NOTHING:
                await self._pass(accepted, progress, brands, publish=False)
                if progress.rows_rejected:
                    message = f"{progress.rows_rejected} row(s) are not valid; nothing was published"
                    await self._end(accepted.id, progress, ImportState.FAILED, message)
                    return
                progress = Progress(self.errors_kept, progress.rows_read, progress.rows_valid)
                await self._pass(accepted, progress, brands, publish=True, counted=True)
            else:
                await self._pass(accepted, progress, brands, publish=True)
        except asyncio.CancelledError:
            raise  # the service stops: the next start marks the import failed
        except Exception as exc:
            log.exception("vacancy import %s failed", accepted.id)
            message = (
                f"the import stopped after publishing the valid rows through line {progress.published_through_line}"
                f": {exc}"
            )
            await self._end(accepted.id, progress, ImportState.FAILED, message)
            return
        await self._end(accepted.id, progress, ImportState.COMPLETED, None)

    async def _pass(
        self,
        accepted: Accepted,
        progress: Progress,
        brands: dict[str, BrandRef | str | None],
        *,
        publish: bool,
        counted: bool = False,
    ) -> None:
        """Read every row; publish the valid ones (``publish``) and commit the progress every ``batch_rows`` rows.

        ``counted``: the rows were read and counted by a first pass (all-or-nothing); only publish."""
        with contextlib.closing(accepted.upload.lines()) as lines:
            await self._read(accepted, progress, brands, lines, publish=publish, counted=counted)

    async def _read(
        self,
        accepted: Accepted,
        progress: Progress,
        brands: dict[str, BrandRef | str | None],
        lines: Iterator[str],
        *,
        publish: bool,
        counted: bool,
    ) -> None:
        batch: list[dict[str, Any]] = []
        read_in_batch = 0
        last_line = 0
        for parsed in parse_rows(accepted.upload.format, lines):
            read_in_batch += 1
            last_line = parsed.line
            built, errors = await self._check(parsed, brands)
            if not counted:
                progress.rows_read += 1
            if built is None:
                if counted:  # valid in the first pass, not now (its closing date passed at midnight)
                    progress.rows_valid -= 1
                progress.reject(errors)
            elif not counted:
                progress.rows_valid += 1
            if built is not None and publish:
                batch.append(built)
            if read_in_batch >= self.batch_rows:
                await self._commit(accepted.id, progress, batch, last_line if publish else 0)
                batch, read_in_batch = [], 0
        await self._commit(accepted.id, progress, batch, last_line if publish else 0)

    async def _check(
        self, parsed: ParsedRow, brands: dict[str, BrandRef | str | None]
    ) -> tuple[dict[str, Any] | None, tuple[RowError, ...]]:
        """The row as the single API would publish it, or what is wrong with it."""
        draft = parsed.draft
        if draft is None:
            return None, parsed.errors
        if draft.brand_id is not None:
            problem = await self._brand_problem(draft.brand_id, brands)
            if problem is not None:
                return None, (RowError(parsed.line, "brand_id", problem),)
        try:
            return self.vacancies.new_vacancy(draft), ()
        except Problem as exc:  # the division is not one of this province's
            return None, (RowError(parsed.line, "division_code", exc.detail),)

    async def _brand_problem(self, brand_id: str, brands: dict[str, BrandRef | str | None]) -> str | None:
        """What makes ``brand_id`` unusable on a vacancy, asked of the register once per import."""
        if brand_id not in brands:
            try:
                brands[brand_id] = await self.vacancies.brands.find(brand_id)
            except BrandRegisterUnavailable as exc:
                brands[brand_id] = f"brand {brand_id} cannot be checked now: {exc}; import this row again shortly"
        found = brands[brand_id]
        if isinstance(found, str):
            return found
        try:
            check_brand(brand_id, found)
        except BrandNotUsable as exc:
            return str(exc)
        return None

    async def _commit(self, import_id: str, progress: Progress, batch: list[dict[str, Any]], through_line: int) -> None:
        """One transaction: the batch's vacancies and events, and the import's progress (``through_line``: the
        last line read, when the rows are published)."""
        values = progress.values()
        values["rows_published"] += len(batch)
        values["published_through_line"] = through_line or progress.published_through_line
        async with self.sessions() as session, session.begin():
            if batch:
                await self.vacancies.insert_published(session, batch)
            await session.execute(update(vacancy_import).where(vacancy_import.c.id == import_id).values(**values))
        progress.rows_published = values["rows_published"]
        progress.published_through_line = values["published_through_line"]

    async def _end(self, import_id: str, progress: Progress, state: ImportState, message: str | None) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(vacancy_import).where(vacancy_import.c.id == import_id).values(**progress.values())
            )
            await self._finish(session, import_id, state, message)
        log.info(
            "vacancy import %s %s: %d rows read, %d published, %d rejected",
            import_id,
            state.value,
            progress.rows_read,
            progress.rows_published,
            progress.rows_rejected,
        )

    async def _finish(self, session: AsyncSession, import_id: str, state: ImportState, message: str | None) -> None:
        moment = utcnow()
        await session.execute(
            update(vacancy_import)
            .where(vacancy_import.c.id == import_id)
            .values(state=state.value, message=message, finished_at=moment, updated_at=moment)
        )
