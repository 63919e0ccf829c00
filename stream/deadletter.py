"""Dead letters: a rejected record, its reason and where it came from, as JSON bytes."""

from __future__ import annotations

import base64

from faust.types.tuples import Message
from recstream.schemas import DeadLetter

#: Most original bytes a dead letter carries: a letter must itself fit in one Kafka
#: record (base64 adds a third), or a hostile record would fail the DLQ send, and
#: so stop the worker, at every restart. The source offset points at the whole.
DLQ_MAX_ORIGINAL_BYTES = 64 * 1024


def dead_letter_json(message: Message, reason: str, detail: str, now_ms: int) -> bytes:
    """The ``events-dlq`` value for ``message``, the original bytes cut to the limit."""
    original = message.value or b""
    if len(original) > DLQ_MAX_ORIGINAL_BYTES:
        detail = f"{detail} (original {len(original)} bytes; first {DLQ_MAX_ORIGINAL_BYTES} kept)"
        original = original[:DLQ_MAX_ORIGINAL_BYTES]
    letter = DeadLetter(
        reason=reason,
        detail=detail,
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        original_b64=base64.b64encode(original).decode("ascii"),
        rejected_ms=now_ms,
    )
    return letter.model_dump_json().encode()
