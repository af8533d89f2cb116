"""Settings of the rights service, from ``LABORNET_RIGHTS_*`` variables (the node's own come from ``LABORNET_*``).

The statutory limits are counted in working days of the handling province's calendar (``LABORNET_HOLIDAYS``,
``LABORNET_EXTRA_WORKDAYS``, ``LABORNET_CALENDAR_PATH``; docs/operations/calendars.md).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from labornet.rights.domain.case import Deadlines
from labornet.shared.workdays import Calendars


class RightsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABORNET_RIGHTS_", env_file=".env", extra="ignore")

    acceptance_limit_days: int = Field(
        5, ge=1, le=250, description="working days the handling province has to accept or decline a referral"
    )
    investigation_limit_days: int = Field(
        60, ge=1, le=250, description="working days from acceptance to the end of the investigation"
    )
    extension_days: int = Field(30, ge=1, le=250, description="working days the one extension adds")
    sweep_interval_s: float = Field(15.0, gt=0, description="how often case gauges (overdue cases…) are refreshed")
    statistics_interval_s: float = Field(
        3600.0,
        gt=0,
        description="how often this province's anonymous statistics are broadcast again without a change, so that "
        "a partner that lost a snapshot (a broker that lost its log beyond the republish window) catches up",
    )

    def deadlines(self, calendars: Calendars) -> Deadlines:
        return Deadlines(
            calendars=calendars,
            acceptance_days=self.acceptance_limit_days,
            investigation_days=self.investigation_limit_days,
            extension_days=self.extension_days,
        )
