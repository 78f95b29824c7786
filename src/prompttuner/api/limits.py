"""Enforcing the service's limits (``state.limits.Limits``): rate limits and per-tenant quotas.

- Request rate: a token bucket a tenant (all its keys share it; an admin key has its own).
- Failed authentication: a token bucket a client address; an address that used it up is answered 429
  before its key is even looked at, until the bucket refills.
- Quotas, checked when a job is created or a file stored: jobs in flight, the bytes of the tenant's
  stored data, and batch_size x max_length of one job.

Every limit answers 429 with ``Retry-After`` (whole seconds) and the error envelope.  The buckets live in
memory, one :class:`Limiter` an app (``app.state.limiter``, made on first use; a test sets its own with a
fake clock); the quotas are counted in the database, so they hold across restarts.  The client address is
the peer's (``request.client.host``): behind a reverse proxy every client shares the proxy's address.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import Request

from prompttuner.api.data import rows_to_jsonl
from prompttuner.api.errors import ApiError
from prompttuner.state.limits import Limits

if TYPE_CHECKING:
    from prompttuner.api.schemas import JobCreate
    from prompttuner.service import Service
    from prompttuner.state.models import Tenant

Clock = Callable[[], float]


class TokenBuckets:
    """One token bucket a key: ``burst`` tokens at most, refilled at ``rate`` a second.

    Memory is bounded: past ``max_keys`` buckets, the full ones (which behave like a fresh bucket) are
    dropped, then the least recently touched.
    """

    def __init__(self, rate: float | None, burst: int, clock: Clock, max_keys: int = 10_000) -> None:
        self.rate, self.burst, self.clock, self.max_keys = rate, float(max(1, burst)), clock, max_keys
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, time of the last refill]
        self._lock = threading.Lock()

    def _bucket(self, key: str, now: float) -> list[float]:
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            b = self._buckets[key] = [self.burst, now]
        else:
            assert self.rate is not None
            b[0] = min(self.burst, b[0] + max(0.0, now - b[1]) * self.rate)
            b[1] = now
        return b

    def _prune(self, now: float) -> None:
        assert self.rate is not None
        rate = self.rate
        full = [k for k, (tok, t) in self._buckets.items() if tok + (now - t) * rate >= self.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            by_age = sorted(self._buckets, key=lambda k: self._buckets[k][1])
            for k in by_age[: len(by_age) // 2 + 1]:
                del self._buckets[k]

    def _wait(self, tokens: float) -> float:
        assert self.rate is not None
        return (1.0 - tokens) / self.rate if self.rate > 0 else math.inf

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token (0: it has one now); takes nothing."""
        if self.rate is None:
            return 0.0
        with self._lock:
            b = self._bucket(key, self.clock())
            return 0.0 if b[0] >= 1.0 else self._wait(b[0])

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0 if there was one, else the seconds until there is (nothing taken)."""
        if self.rate is None:
            return 0.0
        with self._lock:
            b = self._bucket(key, self.clock())
            if b[0] >= 1.0:
                b[0] -= 1.0
                return 0.0
            return self._wait(b[0])


class Limiter:
    """The in-memory rate limits of one app: requests a principal, failed authentication an address."""

    def __init__(self, limits: Limits, clock: Clock = time.monotonic) -> None:
        self.limits = limits
        self.requests = TokenBuckets(limits.requests_per_s, limits.request_burst, clock)
        self.auth_failures = TokenBuckets(limits.auth_failures_per_s, limits.auth_failure_burst, clock)


class LimitExceeded(ApiError):
    """429 with ``Retry-After`` (whole seconds, at least 1) and ``retry_after`` in the envelope."""

    def __init__(self, message: str, retry_after: float, type_: str, param: str | None = None) -> None:
        secs = max(1, math.ceil(retry_after)) if math.isfinite(retry_after) else 3600
        super().__init__(429, message, type_, param, {"retry_after": secs})
        self.headers = {"Retry-After": str(secs)}


_make_lock = threading.Lock()


def limits_of(service: Service) -> Limits:
    """The service's configured limits (the defaults if its config has none)."""
    return service.cfg.limits


def get_limiter(request: Request) -> Limiter:
    """The app's limiter, made on first use from the service's configured limits."""
    state = request.app.state
    lim = getattr(state, "limiter", None)
    if lim is None:
        with _make_lock:
            lim = getattr(state, "limiter", None)
            if lim is None:
                lim = state.limiter = Limiter(limits_of(state.service))
    return lim  # type: ignore[no-any-return]


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def check_auth_allowed(limiter: Limiter, address: str) -> None:
    """429 while ``address`` is over its budget of failed authentication."""
    wait = limiter.auth_failures.wait(address)
    if wait > 0:
        raise LimitExceeded(
            f"too many failed authentication attempts from {address}; retry after {math.ceil(wait)} s",
            wait,
            "rate_limit_error",
        )


def note_auth_failure(limiter: Limiter, address: str) -> None:
    limiter.auth_failures.take(address)


def check_request_rate(limiter: Limiter, principal: str) -> None:
    """Take one request from ``principal``'s bucket, or 429."""
    wait = limiter.requests.take(principal)
    if wait > 0:
        per_s = limiter.limits.requests_per_s
        raise LimitExceeded(
            f"rate limit of {per_s:g} requests/s (bursts of {limiter.limits.request_burst}) exceeded; "
            f"retry after {math.ceil(wait)} s",
            wait,
            "rate_limit_error",
        )


def _quota(message: str, limits: Limits, param: str | None = None) -> LimitExceeded:
    return LimitExceeded(message, limits.quota_retry_after_s, "quota_exceeded", param)


def check_data_quota(service: Service, tenant: Tenant, new_bytes: int) -> None:
    """429 if storing ``new_bytes`` more would put the tenant's data over its quota."""
    limits = limits_of(service)
    if limits.max_data_bytes is None:
        return
    _jobs, used = service.store.tenant_usage(tenant.id)
    if used + new_bytes > limits.max_data_bytes:
        raise _quota(
            f"data quota exceeded: {used} bytes stored + {new_bytes} new is over the limit of "
            f"{limits.max_data_bytes} bytes",
            limits,
            "file",
        )


def check_job_quota(service: Service, tenant: Tenant, body: JobCreate) -> None:
    """429 if the job is too large for one job, or the tenant has its most jobs in flight or data stored."""
    limits = limits_of(service)
    hp = body.hyperparameters
    tokens = hp.batch_size * hp.max_length
    if limits.max_batch_tokens is not None and tokens > limits.max_batch_tokens:
        raise _quota(
            f"batch_size x max_length = {hp.batch_size} x {hp.max_length} = {tokens} tokens is over the "
            f"limit of {limits.max_batch_tokens} a job",
            limits,
            "hyperparameters.batch_size",
        )
    in_flight, used = service.store.tenant_usage(tenant.id)
    if limits.max_jobs_in_flight is not None and in_flight >= limits.max_jobs_in_flight:
        raise _quota(
            f"{in_flight} jobs in flight is the limit of {limits.max_jobs_in_flight}; "
            "wait for one to end or cancel one",
            limits,
        )
    if body.training_data is not None and limits.max_data_bytes is not None:
        new = len(rows_to_jsonl([r.model_dump() for r in body.training_data]))
        if used + new > limits.max_data_bytes:
            raise _quota(
                f"data quota exceeded: {used} bytes stored + {new} of training_data is over the limit of "
                f"{limits.max_data_bytes} bytes",
                limits,
                "training_data",
            )
