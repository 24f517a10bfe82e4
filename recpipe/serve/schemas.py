"""Request and response models of the service (pydantic; no BentoML import).

Every request model forbids unknown fields and bounds its sizes, so a malformed request
is refused with HTTP 400 and the field that is wrong before any scoring. The bounds here
are hard caps; the bundle's own limits (``serve.max_k``, ``serve.max_session_length``)
are checked by the predictor and refused the same way. Unknown ids are *not* errors:
they take the cold-start path, and every answer names the strategy that produced it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

from recpipe.data.schema import EVENT_TYPES
from recpipe.models.coldstart import STRATEGIES

__all__ = [
    "DEFAULT_K",
    "EARLIEST_TIME",
    "HARD_MAX_ITEMS",
    "HARD_MAX_K",
    "LATEST_TIME",
    "MAX_ID_LENGTH",
    "ItemMetadata",
    "ModelInfo",
    "RecommendRequest",
    "Recommendation",
    "RequestContext",
    "SessionRequest",
    "SimilarRequest",
]

#: Largest k any request may carry (the bundle's ``max_k`` is usually smaller).
HARD_MAX_K = 1000
#: Most items a session or a request context may carry (the bundle's limit is usually smaller).
HARD_MAX_ITEMS = 1000

EventType = Literal[*EVENT_TYPES]  # type: ignore[valid-type]
Strategy = Literal[*STRATEGIES]  # type: ignore[valid-type]
#: Longest item or user id (characters).
MAX_ID_LENGTH = 256
ItemId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
#: Earliest and latest event time a request may carry (UTC; the model's time features are
#: computed in int64 nanoseconds, which end in 1677 and 2262).
EARLIEST_TIME = datetime(1678, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2262, 1, 1, tzinfo=UTC)


def _in_time_range(moment: datetime) -> datetime:
    """``moment`` if it lies in [EARLIEST_TIME, LATEST_TIME) (naive times are UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    if not EARLIEST_TIME <= aware < LATEST_TIME:
        raise ValueError(
            f"time {moment.isoformat()} is out of range: give a time from "
            f"{EARLIEST_TIME.date()} to before {LATEST_TIME.date()} (UTC)"
        )
    return moment


_TIME_HELP = (
    "ISO 8601 or epoch seconds (milliseconds above 2e10); naive times are UTC; from "
    f"{EARLIEST_TIME.date()} to before {LATEST_TIME.date()}"
)
EventTime = Annotated[
    datetime,
    AfterValidator(_in_time_range),
    Field(examples=["2026-01-20T18:30:00Z", 1768933800]),
]
#: k of a request that gives none (at most the service's ``max_k``).
DEFAULT_K = 20
K = Annotated[
    StrictInt | None,
    Field(
        ge=1,
        le=HARD_MAX_K,
        description=f"number of items to return (default {DEFAULT_K}, at most the service's "
        "max_k: GET /model)",
    ),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestContext(_Request):
    """What is known about the moment of a user request (all optional)."""

    timestamp: EventTime | None = Field(
        default=None, description=f"when (hour and weekday of the request): {_TIME_HELP}"
    )
    event_type: EventType | None = Field(  # type: ignore[valid-type]
        default=None, description="type of the current event (view, click, cart, ...)"
    )
    items: list[ItemId] = Field(
        default_factory=list,
        max_length=HARD_MAX_ITEMS,
        description="items the user saw recently, oldest first: the cold-start request of "
        "an unknown user (and left out of the answer with exclude_seen)",
    )


class RecommendRequest(_Request):
    """``POST /recommend``: top-k items for a user."""

    user_id: ItemId = Field(description="the user's id; unknown users take the cold-start path")
    k: K = None
    exclude_seen: StrictBool = Field(
        default=True, description="leave out items the user (or the context) already has"
    )
    context: RequestContext | None = None


class SessionRequest(_Request):
    """``POST /recommend/session``: next items for a live session."""

    items: list[ItemId] = Field(
        max_length=HARD_MAX_ITEMS,
        description="the session's item ids, oldest first (may be empty: popularity)",
    )
    event_types: list[EventType] | None = Field(  # type: ignore[valid-type]
        default=None,
        max_length=HARD_MAX_ITEMS,
        description="the event type of each item (same length as items)",
    )
    timestamps: list[EventTime] | None = Field(
        default=None,
        max_length=HARD_MAX_ITEMS,
        description=f"the time of each event (same length as items): {_TIME_HELP}",
    )
    k: K = None
    exclude_seen: StrictBool = Field(default=True, description="leave out the session's own items")

    @model_validator(mode="after")
    def _same_lengths(self) -> SessionRequest:
        for name in ("event_types", "timestamps"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.items):
                raise ValueError(
                    f"{name} has {len(values)} entries but items has {len(self.items)}; "
                    "give one per item"
                )
        return self


class ItemMetadata(_Request):
    """Content of an item the model has not seen (for ``/similar`` of a new item)."""

    title: str | None = Field(default=None, max_length=10_000)
    text: str | None = Field(default=None, max_length=100_000)
    categories: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=256
    )
    attributes: dict[str, float] = Field(
        default_factory=dict,
        max_length=256,
        description="numeric attributes by name (GET /model lists the ones the model knows)",
    )


class SimilarRequest(_Request):
    """``POST /similar``: items similar to a known item, or to a new one given by metadata."""

    item_id: ItemId | None = None
    metadata: ItemMetadata | None = None
    k: K = None

    @model_validator(mode="after")
    def _one_item(self) -> SimilarRequest:
        if self.item_id is None and self.metadata is None:
            raise ValueError("give item_id, or metadata for an item the model has not seen")
        return self


class Recommendation(BaseModel):
    """An answer: item ids best first, their scores, and the strategy that produced them."""

    items: list[str]
    scores: list[float]
    strategy: Strategy  # type: ignore[valid-type]
    reason: str = Field(
        default="", description="why this strategy answered (e.g. an unknown user's fallback)"
    )


class ModelInfo(BaseModel):
    """``GET /model``: what is being served."""

    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(description="the model (registry name of the architecture)")
    split: str
    registered_model: str | None
    registry_version: str | None = Field(description="MLflow registry version; null: unregistered")
    source: str = Field(description="champion (registry alias) or gate_candidate")
    data_hash: str
    git_commit: str
    metrics: dict[str, float]
    created_at: str
    n_items: int
    n_users: int
    query_kinds: list[str]
    fallback: str
    index: dict[str, Any] | None
    limits: dict[str, int]
    strategies: list[str]
    content_attributes: list[str] | None = Field(
        description="numeric attributes /similar metadata may carry; null: no content model"
    )
