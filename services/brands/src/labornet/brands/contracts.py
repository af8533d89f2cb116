"""The brands service's bus contract: the brand events every member reads, the demand messages between two.

A brand's four events are broadcast on its origin's stream (``labornet.<origin>.brands.events``, key = brand id),
each carrying the whole brand as :class:`~labornet.brands.domain.brand.BrandRecord` describes it. A demand and its
answer are directed messages to one province's brands inbox (``labornet.<destination>.brands.inbox``, key =
demand id), each carrying the whole demand as :class:`~labornet.brands.domain.demand.DemandRecord` describes it.
Both records are the models receivers validate with, so the schema is the rule they apply: unknown fields are
ignored (a later version may add optional ones), times are RFC 3339 in UTC, dates ISO 8601.
"""

from __future__ import annotations

from labornet.brands.domain.brand import RECOGNISED, REGISTERED, REVOKED, UPDATED, BrandRecord
from labornet.brands.domain.demand import ANSWERED, POSTED, DemandRecord
from labornet.shared.contracts import EventContract

EVENTS: list[EventContract] = [
    EventContract(
        type=REGISTERED,
        model=BrandRecord,
        channel="events",
        summary="A brand was registered in its origin province (proposed, version 1).",
        description="Partners add it to their replica; it is listed with status `proposed` and takes no demands.",
    ),
    EventContract(
        type=UPDATED,
        model=BrandRecord,
        channel="events",
        summary="A brand that is not revoked was changed (the whole brand at its new version).",
        description="A replica replaces its copy only when the version is newer; a recognised brand keeps its "
        "Chinese name.",
    ),
    EventContract(
        type=RECOGNISED,
        model=BrandRecord,
        channel="events",
        summary="A proposed brand was recognised (status `recognised`, `recognised_at` set).",
        description="From then on it is listed on every node, takes partners' demands and ranks in the "
        "name-conflict rule by `recognised_at`.",
    ),
    EventContract(
        type=REVOKED,
        model=BrandRecord,
        channel="events",
        summary="A brand was revoked or its proposal withdrawn (status `revoked`, with the reason).",
        description="A revoked brand never changes again and gives its name up in its province and in the "
        "name-conflict rule.",
    ),
    EventContract(
        type=POSTED,
        model=DemandRecord,
        channel="inbox",
        summary="A province asks the brand's province for workers of one of its recognised brands (open, version 1).",
        description="Sent by the demanding province to the brand's origin; the origin records it and declines it "
        "at once (answered_by `labornet:automatic`) when the brand is no longer recognised there.",
    ),
    EventContract(
        type=ANSWERED,
        model=DemandRecord,
        channel="inbox",
        summary="The brand's province answered a demand, once: accepted with the workers it can send, or "
        "declined with a reason (version 2).",
        description="Sent by the brand's origin back to the demanding province, which takes the answer fields only.",
    ),
]
