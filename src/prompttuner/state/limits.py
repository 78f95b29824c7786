"""The limits every tenant is held to: request rate, failed authentication, and quotas.

Part of the service's configuration (``ServiceConfig.limits``); the API enforces them (``api.limits``).
Every limit answers 429 with a ``Retry-After`` header.  ``None`` turns a limit off.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    # request rate a tenant (all its keys together; an admin key on its own), as a token bucket: this many
    # requests a second on average, and bursts of up to request_burst
    requests_per_s: float | None = 50.0
    request_burst: int = 100
    # failed authentication (a missing, unknown or revoked key) from one client address: auth_failure_burst
    # failures, then one more every 1 / auth_failures_per_s seconds; while the address is over, every
    # request from it that needs a key is answered 429 without looking at the key
    auth_failures_per_s: float | None = 0.2
    auth_failure_burst: int = 20
    # quotas of a tenant
    max_jobs_in_flight: int | None = 16  # jobs not yet ended (queued, selecting a prompt, running)
    max_data_bytes: int | None = 1 << 30  # all its stored data files (uploads and inline training data)
    max_batch_tokens: int | None = 32_768  # batch_size x max_length of one job
    quota_retry_after_s: int = 60  # the Retry-After of a quota answer (quotas free up as jobs end)
