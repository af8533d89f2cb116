"""Prometheus gauges of the cases a node holds: by status, overdue, amounts owed and recovered.

Every gauge carries the node's ``province`` and its ``side`` in the cases (``home``: filed here, ``handling``:
referred here, ``former``: declined here). Label sets that fall to zero are set to zero, not left stale.
"""

from __future__ import annotations

from datetime import date

from prometheus_client import Gauge
from sqlalchemy import case as sql_case
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.rights.adapters.cases import from_fen, overdue_condition, side_of
from labornet.rights.adapters.tables import rights_case
from labornet.rights.domain.case import Overdue, Status

SIDES = ("home", "handling", "former")

CASES = Gauge("labornet_rights_cases", "Rights cases held by this node, by state", ["province", "side", "state"])
OVERDUE = Gauge(
    "labornet_rights_cases_overdue",
    "Open rights cases past a statutory time limit (acceptance or investigation)",
    ["province", "side", "deadline"],
)
AMOUNT_OWED = Gauge(
    "labornet_rights_amount_owed_yuan", "Wages and other amounts owed in the cases held, CNY", ["province", "side"]
)
AMOUNT_RECOVERED = Gauge(
    "labornet_rights_amount_recovered_yuan", "Amounts recovered in the resolved cases held, CNY", ["province", "side"]
)


async def refresh_gauges(session: AsyncSession, province: str, today: date) -> None:
    side = side_of(province).label("side")
    counts: dict[tuple[str, str], int] = {}
    owed = dict.fromkeys(SIDES, 0)
    recovered = dict.fromkeys(SIDES, 0)
    rows = await session.execute(
        select(
            side,
            rights_case.c.status,
            func.count(),
            func.sum(rights_case.c.amount_owed_fen),
            func.sum(func.coalesce(rights_case.c.amount_recovered_fen, 0)),
        ).group_by(side, rights_case.c.status)
    )
    for side_name, status, count, owed_fen, recovered_fen in rows:
        counts[(side_name, status)] = int(count)
        owed[side_name] += int(owed_fen)
        recovered[side_name] += int(recovered_fen)
    deadline = sql_case(
        (rights_case.c.status == Status.REFERRED.value, Overdue.ACCEPTANCE.value), else_=Overdue.INVESTIGATION.value
    ).label("deadline")
    late = dict(
        ((side_name, kind), int(count))
        for side_name, kind, count in await session.execute(
            select(side, deadline, func.count()).where(overdue_condition(today)).group_by(side, deadline)
        )
    )
    for side_name in SIDES:
        for state in Status:
            CASES.labels(province, side_name, state.value).set(counts.get((side_name, state.value), 0))
        for kind in Overdue:
            OVERDUE.labels(province, side_name, kind.value).set(late.get((side_name, kind.value), 0))
        AMOUNT_OWED.labels(province, side_name).set(float(from_fen(owed[side_name])))
        AMOUNT_RECOVERED.labels(province, side_name).set(float(from_fen(recovered[side_name])))
