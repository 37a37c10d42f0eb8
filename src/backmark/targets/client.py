"""Querying a remote model done right: budget, timeouts, retries with backoff, rate limit, audit.

Every request goes through :meth:`HttpClient.request`:

- a **query budget** caps the images sent, retries included; a query that would pass it is
  refused before it is sent (QueryBudgetExceeded);
- a **timeout** bounds each attempt end to end (connect, send, and the whole answer), so a
  server that stalls or trickles bytes cannot hold the client;
- **retries** with exponential backoff (``backoff`` x 2^k, at most ``max_backoff``) on
  connection errors, timeouts, 429 and 5xx, honouring ``Retry-After``; and on answers that are
  not a prediction (HTML, malformed JSON, wrong shape or class count). Other 4xx fail at once;
- a **rate limit** spaces request starts at least 1/``rate_limit`` seconds apart;
- an **audit log** records every attempt (hashes of request and answer, chained).

After the last retry the error is one line naming the URL, what was wrong and how many
attempts were made (RemoteError). Time and sleep are parameters, so tests run without waiting.
"""
from __future__ import annotations

import email.utils
import http.client
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from ..errors import QueryBudgetExceeded, RemoteError
from ..io.hashing import sha256_hex
from .audit import AuditLog

T = TypeVar("T")
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class BadAnswer(Exception):
    """Raised by a parser: the answer is not what the protocol promises (retried)."""


@dataclass(frozen=True)
class RemoteOptions:
    """How to query a remote model. Times in seconds; ``budget`` in images (None: no cap)."""

    batch_size: int = 32
    budget: int | None = None
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0
    rate_limit: float | None = None  # requests per second
    audit_log: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    max_answer_bytes: int = 64 << 20
    user_agent: str = field(default="backmark")
    # v2 binary tensor data: "auto" (when GET /v2 lists the extension), "on" (always), "off" (JSON only)
    binary: str = "auto"

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.budget is not None and self.budget < 0:
            raise ValueError("budget must be at least 0")
        if not self.timeout > 0:
            raise ValueError("timeout must be positive")
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("retries and backoff times must not be negative")
        if self.rate_limit is not None and not self.rate_limit > 0:
            raise ValueError("rate_limit must be positive (requests per second)")
        if self.binary not in ("auto", "on", "off"):
            raise ValueError(f"binary must be auto, on or off, not {self.binary!r}")


@dataclass
class Answer:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def snippet(body: bytes, limit: int = 80) -> str:
    """The start of a body as one printable line."""
    text = " ".join(body[: limit * 2].decode("utf-8", "replace").split())
    return text[:limit] + ("..." if len(text) > limit else "")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


class HttpClient:
    """One remote endpoint's connection policy and counters (not thread-safe)."""

    def __init__(
        self,
        options: RemoteOptions,
        *,
        audit_target: str = "",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.options = options
        self.clock, self.wall, self.sleep = clock, wall, sleep
        self.audit = AuditLog(options.audit_log, target=audit_target, clock=wall) if options.audit_log else None
        self.images_sent = 0
        self.requests = 0
        self.retries = 0
        self.waited = 0.0
        self._last_start: float | None = None

    # -- policy -----------------------------------------------------------------------
    def check_budget(self, images: int) -> None:
        budget = self.options.budget
        if budget is not None and self.images_sent + images > budget:
            raise QueryBudgetExceeded(
                f"the query budget of {budget} images would be passed: {self.images_sent} sent so far "
                f"({self.retries} retries), {images} more needed; raise --budget to allow more"
            )

    def _pace(self) -> None:
        if self.options.rate_limit is not None and self._last_start is not None:
            wait = self._last_start + 1.0 / self.options.rate_limit - self.clock()
            if wait > 0:
                self._wait(wait)
        self._last_start = self.clock()

    def _wait(self, seconds: float) -> None:
        self.waited += seconds
        self.sleep(seconds)

    # -- one attempt ------------------------------------------------------------------
    def _send(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        """One HTTP exchange, bounded end to end by options.timeout. Raises OSError / TimeoutError."""
        u = urlsplit(url)
        timeout = self.options.timeout
        deadline = time.monotonic() + timeout
        if u.scheme == "https":
            conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete answer within {timeout:g} s")
            return left

        try:
            conn.connect()
            sock = conn.sock  # kept: the connection drops it once the answer says "close"
            sock.settimeout(remaining())
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            conn.request(method, path, body=body, headers=headers)
            sock.settimeout(remaining())
            resp = conn.getresponse()
            chunks, size = [], 0
            while True:
                sock.settimeout(remaining())
                chunk = resp.read1(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.options.max_answer_bytes:
                    raise BadAnswer(f"answer larger than {self.options.max_answer_bytes} bytes")
                chunks.append(chunk)
            return Answer(resp.status, resp.reason, {k.lower(): v for k, v in resp.getheaders()}, b"".join(chunks))
        except TimeoutError:
            raise TimeoutError(f"no complete answer within {timeout:g} s") from None
        except http.client.HTTPException as e:
            raise ConnectionError(f"broken HTTP answer ({type(e).__name__})") from None
        finally:
            conn.close()

    # -- the policy loop --------------------------------------------------------------
    def request(
        self,
        method: str,
        url: str,
        body: bytes | None,
        parse: Callable[[Answer], T],
        *,
        images: int = 0,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        note: Callable[[T], dict] | None = None,
    ) -> T:
        """Send with retries; ``parse`` turns a 2xx answer into a result or raises BadAnswer.
        ``headers``: the protocol's own (e.g. the v2 binary header length), sent before the user's."""
        headers = {"User-Agent": self.options.user_agent, "Accept": "application/json",
                   **(headers or {}), **dict(self.options.headers)}
        if body is not None:
            headers["Content-Type"] = content_type
        attempts = self.options.retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            self.check_budget(images)
            self._pace()
            self.images_sent += images
            self.requests += 1
            started = time.monotonic()
            answer, result, retry_after, fatal = None, None, None, False
            try:
                answer = self._send(method, url, body, headers)
            except BadAnswer as e:
                problem = str(e)
            except TimeoutError as e:
                problem = str(e)
            except OSError as e:
                problem = f"cannot connect ({e.strerror or e})" if isinstance(e, ConnectionRefusedError) else f"connection failed ({e})"
            else:
                if 200 <= answer.status < 300:
                    try:
                        result = parse(answer)
                        problem = ""
                    except BadAnswer as e:
                        problem = str(e)
                else:
                    problem = f"HTTP {answer.status} {answer.reason}".rstrip()
                    if answer.body:
                        problem += f": {snippet(answer.body)}"
                    if answer.status in RETRY_STATUSES or answer.status >= 500:
                        retry_after = parse_retry_after(answer.headers.get("retry-after"), self.wall())
                    else:
                        fatal = True
            self._log(method, url, body, images, attempt, answer, problem, started, note(result) if (note and not problem) else None)
            if not problem:
                return result
            if fatal or attempt == attempts:
                break
            if retry_after is not None and retry_after > self.options.max_retry_after:
                problem += f"; the server asks to wait {retry_after:.0f} s, more than the {self.options.max_retry_after:g} s allowed"
                break
            self.retries += 1
            delay = min(self.options.backoff * 2 ** (attempt - 1), self.options.max_backoff)
            self._wait(max(delay, retry_after or 0.0))
        tries = f"{attempt} attempt" + ("s" if attempt > 1 else "")
        raise RemoteError(f"{method} {redact(url)}: {problem} (gave up after {tries})")

    def _log(self, method, url, body, images, attempt, answer, problem, started, extra) -> None:
        if self.audit is None:
            return
        req = {"method": method, "url": redact(url), "sha256": sha256_hex(body or b""), "bytes": len(body or b""), "images": images}
        resp = None
        if answer is not None:
            resp = {"status": answer.status, "sha256": sha256_hex(answer.body), "bytes": len(answer.body), "content_type": answer.content_type}
        rec = {"attempt": attempt, "request": req, "response": resp, "elapsed_us": int((time.monotonic() - started) * 1e6)}
        rec["outcome"] = "ok" if not problem else "error"
        if problem:
            rec["error"] = problem
        if extra:
            rec.update(extra)
        self.audit.append("exchange", **rec)

    def report(self) -> dict:
        return {
            "requests": self.requests,
            "images_sent": self.images_sent,
            "retries": self.retries,
            "budget": self.options.budget,
            "audit_log": self.options.audit_log,
            "audit_head": self.audit.head if self.audit else None,
        }


def redact(url: str) -> str:
    """A URL without its query string or credentials (they may hold API keys)."""
    u = urlsplit(url)
    host = u.hostname or ""
    if u.port:
        host = f"{host}:{u.port}"
    return f"{u.scheme}://{host}{u.path}" + ("?..." if u.query else "")


__all__ = ["Answer", "BadAnswer", "HttpClient", "RemoteOptions", "parse_retry_after", "redact", "snippet"]
