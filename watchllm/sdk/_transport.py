"""Sending batches: one POST per batch, retried with backoff and jitter.

stdlib only (urllib), called from the SDK's background thread, so blocking is fine and
no event loop is involved. A `Transport` is any callable (url, body, headers, timeout)
-> (status, headers, body); tests pass a fake one.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("watchllm.sdk")
Response = tuple[int, Mapping[str, str], bytes]
Transport = Callable[[str, bytes, Mapping[str, str], float], Response]


def urllib_transport(url: str, body: bytes, headers: Mapping[str, str],
                     timeout: float) -> Response:
    req = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:  # an answer, just not a 2xx
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@dataclass(slots=True)
class Outcome:
    sent: int = 0  # accepted by the server (duplicates included)
    rejected: int = 0  # refused by the server as invalid or forbidden: never retried
    failed: int = 0  # gave up after retries (server down, or stop requested)


RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class Sender:
    def __init__(self, base_url: str, api_key: str, transport: Transport | None = None,
                 timeout: float = 10.0, max_retries: int = 5, backoff: float = 0.5,
                 backoff_max: float = 30.0, user_agent: str = "watchllm-python") -> None:
        base = base_url.rstrip("/")
        self.url = base.removesuffix("/v1") + "/v1/events/batch"
        self.headers = {"authorization": f"Bearer {api_key}",
                        "content-type": "application/json", "user-agent": user_agent}
        self.transport = transport or urllib_transport
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff, self.backoff_max = backoff, backoff_max

    def send(self, events: list[dict[str, Any]], deadline: float | None = None,
             stopping: Callable[[], bool] = lambda: False) -> Outcome:
        """Deliver `events` (mode partial: one bad event does not sink the batch)."""
        body = json.dumps({"events": events, "mode": "partial"}, ensure_ascii=False,
                          separators=(",", ":")).encode()
        attempt = 0
        while True:
            try:
                status, headers, raw = self.transport(self.url, body, self.headers, self.timeout)
            except (OSError, ValueError, http.client.HTTPException) as e:  # network, DNS, URL
                status, headers, raw = 0, {}, str(e).encode()
            if 200 <= status < 300:
                return self._accepted(len(events), raw)
            if status == 413 and len(events) > 1:  # too big: halves, each on its own
                half = len(events) // 2
                a = self.send(events[:half], deadline, stopping)
                b = self.send(events[half:], deadline, stopping)
                return Outcome(a.sent + b.sent, a.rejected + b.rejected, a.failed + b.failed)
            if status and status not in RETRY_STATUSES:
                log.warning("watchllm: %d events refused (%d): %s", len(events), status,
                            raw[:300].decode(errors="replace"))
                return Outcome(rejected=len(events))
            attempt += 1
            delay = self._delay(attempt, headers.get("retry-after"))
            if (attempt > self.max_retries or stopping()
                    or (deadline is not None and time.monotonic() + delay > deadline)):
                log.warning("watchllm: giving up on %d events after %d attempts (last: %s)",
                            len(events), attempt, status or raw[:200].decode(errors="replace"))
                return Outcome(failed=len(events))
            time.sleep(delay)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        # "Full jitter": uniform in [0, min(cap, base * 2^n)]; a server's Retry-After wins.
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            return min(float(retry_after), self.backoff_max)
        return random.uniform(0, min(self.backoff_max, self.backoff * 2 ** (attempt - 1)))

    @staticmethod
    def _accepted(count: int, raw: bytes) -> Outcome:
        try:
            data = json.loads(raw)
            rejected = len(data.get("rejected", []))
        except (ValueError, AttributeError):
            rejected = 0
        if rejected:
            log.warning("watchllm: server rejected %d events: %s", rejected,
                        raw[:300].decode(errors="replace"))
        return Outcome(sent=count - rejected, rejected=rejected)
