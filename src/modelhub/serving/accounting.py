"""What a request used, kept while it runs, and settled once whatever happens.

A request admitted to a backend is journaled at once (``Platform.begin``), checkpointed
while it generates, and closed exactly once with its final status: ``ok``, ``cancelled``
(the client left, or the server drained), ``error`` or ``refused`` (turned away by the
backend before any token, billed nothing). The ledger row is durable before the
response's last byte leaves; the rate-limit reservation is settled after it, so a
limiter outage never costs a row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from modelhub.access import note_tokens
from modelhub.metrics import Metrics
from modelhub.platform import Platform, Principal, UsageRecord
from modelhub.schemas.chat import Usage
from modelhub.serving.backends.base import ChoiceEnd, ChoiceEvent, Progress

if TYPE_CHECKING:
    from modelhub.serving.chat import PreparedChat

__all__ = ["Accounting", "RequestAccount", "Tally"]

log = logging.getLogger(__name__)


@dataclass
class Tally:
    """Tokens per choice as they arrive; a backend's final count replaces them."""

    choice_tokens: dict[int, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    first_token_at: datetime | None = None
    finish_reasons: dict[int, str] = field(default_factory=dict)

    @property
    def completion_tokens(self) -> int:
        return sum(self.choice_tokens.values())

    def see(self, index: int, event: ChoiceEvent) -> bool:
        """Count the event; True when it brought generated tokens."""
        if isinstance(event, Progress):
            self.choice_tokens[index] = self.choice_tokens.get(index, 0) + event.tokens
            if self.first_token_at is None:
                self.first_token_at = datetime.now(UTC)
            return True
        if isinstance(event, ChoiceEnd):
            self.choice_tokens[index] = event.completion_tokens
            self.prompt_tokens = event.prompt_tokens
            self.finish_reasons[index] = event.finish_reason
        return False

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )


def usage_record(
    *,
    request_id: str,
    principal: Principal,
    model: str,
    received_at: datetime,
    status: str,
    tally: Tally | None = None,
    image_tokens: int = 0,
) -> UsageRecord:
    tally = tally or Tally()
    reasons = set(tally.finish_reasons.values())
    return UsageRecord(
        request_id=request_id,
        principal=principal,
        model=model,
        received_at=received_at,
        first_token_at=tally.first_token_at,
        finished_at=datetime.now(UTC),
        prompt_tokens=tally.prompt_tokens,
        image_tokens=image_tokens if tally.prompt_tokens else 0,
        completion_tokens=tally.completion_tokens,
        status=status,
        finish_reason=reasons.pop() if len(reasons) == 1 else None,
    )


class RequestAccount:
    def __init__(self, prepared: PreparedChat, platform: Platform, metrics: Metrics):
        self._prepared = prepared
        self._platform = platform
        self._metrics = metrics
        self.tally = Tally(prompt_tokens=prepared.prompt.prompt_tokens)
        self._closed = False
        # A crash from here on bills what the last checkpoint saw, as a cancelled request.
        # The journal calls this only when a checkpoint is due: not a record per token.
        self._progress = partial(self._record, "cancelled")
        self._in_flight = platform.begin(self._progress())

    def _record(self, status: str) -> UsageRecord:
        prepared = self._prepared
        return usage_record(
            request_id=prepared.id,
            principal=prepared.principal,
            model=prepared.request.model,
            received_at=prepared.received_at,
            status=status,
            tally=self.tally,
            image_tokens=prepared.prompt.image_tokens,
        )

    def see(self, index: int, event: ChoiceEvent) -> None:
        if self.tally.see(index, event):
            self._in_flight.checkpoint(self._progress)

    async def close(self, status: str) -> None:
        """Settle once: metrics, the durable ledger row, then the reservation."""
        if self._closed:
            return
        self._closed = True
        if status == "refused":
            self.tally = Tally()  # turned away before inference: nothing to bill
        record = self._record(status)
        self._observe(record)
        await self._in_flight.finish(record)
        reservation = self._prepared.reservation
        if reservation is not None:
            await reservation.commit(record.prompt_tokens + record.completion_tokens)

    def _observe(self, record: UsageRecord) -> None:
        # The metrics use the ledger's own timestamps, so the two never disagree.
        ttft = tpot = None
        first = record.first_token_at
        if first is not None:
            ttft = max((first - record.received_at).total_seconds(), 0.0)
            if record.completion_tokens > 1:
                decoding = (record.finished_at - first).total_seconds()
                tpot = decoding / (record.completion_tokens - 1)
        self._metrics.observe_usage(
            model=record.model,
            contract=record.principal.contract_name,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            ttft_s=ttft,
            tpot_s=tpot,
        )
        note_tokens(record.prompt_tokens, record.completion_tokens)


class Accounting:
    def __init__(self, platform: Platform, metrics: Metrics):
        self._platform = platform
        self._metrics = metrics

    def open(self, prepared: PreparedChat) -> RequestAccount:
        return RequestAccount(prepared, self._platform, self._metrics)

    async def turned_away(
        self, request_id: str, principal: Principal, model: str, received_at: datetime, status: str
    ) -> None:
        """On record, at no cost: nothing was processed (``rate_limited``, or ``refused``
        when the limiter itself could not answer)."""
        await self._platform.record(
            usage_record(
                request_id=request_id,
                principal=principal,
                model=model,
                received_at=received_at,
                status=status,
            )
        )
