"""Creating a job: validate the request, quote it, write its rows in one transaction, hand it over.

Validation reads only; the quote is computed with no transaction open (the controller writes to the same
database, and SQLite has a single writer); then the inline training file (if any) and the job row are
written together, so a rejected request leaves nothing behind, and the job goes to the controller.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prompttuner.api.data import DataError, check_jsonl, check_labels, rows_to_jsonl, store_file
from prompttuner.api.deps import own_file
from prompttuner.api.errors import ApiError
from prompttuner.api.limits import check_job_quota
from prompttuner.api.schemas import DATE_TIME, DATE_TIME_NO_ZONE, MAX_DEADLINE_AHEAD_S, JobCreate
from prompttuner.core.types import SLO, JobPhase, JobSpec, Quote
from prompttuner.runtime.engine import JobPayload
from prompttuner.service import Service
from prompttuner.state.models import Job, Tenant
from prompttuner.state.serial import finite, iso_time, json_safe, quote_json


def parse_time(text: str) -> float:
    """An RFC 3339 time with a zone (``2026-01-01T12:00:00Z``) as epoch seconds; ValueError if it is not one.

    A leap second (``23:59:60``) counts as the second before it; digits of a fraction past microseconds
    are dropped.
    """
    m = DATE_TIME.fullmatch(text)
    if m is None:
        raise ValueError(text)
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac, zone = m.group(7), m.group(8)
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    if zone in ("Z", "z"):
        tz = dt.UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(text)
        tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    d = dt.datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=tz)  # ValueError if bad
    return d.timestamp()


def _when(t: float) -> str:
    """A time for a message: ISO 8601 when it can be shown so, else the number."""
    return iso_time(t) or f"{t:g} (epoch seconds)"


def parse_deadline(body: JobCreate, now: float) -> float:
    """The job's deadline in epoch seconds, from ``deadline`` or ``duration_s`` (exactly one).

    It must be after ``now`` and at most :data:`MAX_DEADLINE_AHEAD_S` (a year) ahead.
    """
    if body.deadline is not None and body.duration_s is not None:
        raise ApiError(422, "give either deadline or duration_s, not both", param="deadline")
    if body.duration_s is not None:
        if not 0 < body.duration_s <= MAX_DEADLINE_AHEAD_S:  # the schema's bounds, checked again
            raise ApiError(
                422,
                f"duration_s must be more than 0 and at most {MAX_DEADLINE_AHEAD_S:.0f}",
                param="duration_s",
            )
        return now + body.duration_s
    if body.deadline is None:
        raise ApiError(
            422, "an SLO is required: give deadline (time) or duration_s (seconds)", param="deadline"
        )
    if isinstance(body.deadline, int | float):
        t = float(body.deadline)
    else:
        try:
            t = parse_time(body.deadline)
        except (ValueError, OverflowError):
            if DATE_TIME_NO_ZONE.fullmatch(body.deadline):
                raise ApiError(
                    422, "deadline needs a time zone (e.g. 2026-01-01T12:00:00Z)", param="deadline"
                ) from None
            raise ApiError(
                422,
                f"deadline {body.deadline!r} is not ISO 8601 (RFC 3339, e.g. 2026-01-01T12:00:00Z) "
                "or epoch seconds",
                param="deadline",
            ) from None
    if not math.isfinite(t) or t <= now:
        raise ApiError(422, f"deadline {_when(t)} is in the past (now is {_when(now)})", param="deadline")
    if t > now + MAX_DEADLINE_AHEAD_S:
        raise ApiError(
            422,
            f"deadline {_when(t)} is more than a year ahead (at most {_when(now + MAX_DEADLINE_AHEAD_S)})",
            param="deadline",
        )
    return t


def _check_request(service: Service, t: Tenant, body: JobCreate, now: float) -> float:
    """What both a job and a quote check first; the deadline in epoch seconds."""
    cfg, ctl = service.cfg, service.controller
    known = set(service.models)
    if body.model not in known:
        raise ApiError(422, f"unknown model {body.model!r}; available: {sorted(known)}", param="model")
    if body.max_steps > cfg.max_steps_limit:
        raise ApiError(
            422,
            f"max_steps {body.max_steps} is over the limit of {cfg.max_steps_limit}",
            param="max_steps",
        )
    broken = ctl.broken_model(body.model)
    if broken is not None:
        raise ApiError(
            503,
            f"model {body.model!r} cannot be loaded on this service: {broken}",
            "unavailable",
            "model",
        )
    deadline = parse_deadline(body, now)
    if (body.training_file is None) == (body.training_data is None):
        raise ApiError(422, "give exactly one of training_file and training_data", param="training_file")
    return deadline


def selection_key(t: Tenant, body: JobCreate) -> str:
    """What a Prompt Bank selection depends on: the tenant, model, data, labels, target and settings (not
    the deadline), so a quote's selection is used by the job submitted with the same request."""
    parts = body.model_dump(mode="json", exclude={"deadline", "duration_s", "best_effort"})
    raw = json.dumps({"tenant": t.id, **parts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def submit_job(service: Service, t: Tenant, body: JobCreate) -> str:
    """Create and submit the job ``body`` for tenant ``t``; returns its id (``ApiError`` if refused)."""
    now = time.time()
    deadline = _check_request(service, t, body, now)
    check_job_quota(service, t, body)  # 429: batch tokens, jobs in flight, data stored (api.limits)
    job_id = "job-" + secrets.token_hex(8)
    written: list[Path] = []
    key = selection_key(t, body)
    selection = service.controller.take_selection(key) if body.bank_warm_start else None
    try:
        info = _create_job_rows(service, t, body, job_id, deadline, now, written, selection)
    except BaseException:
        for p in written:  # nothing half-written: a rejected job leaves no file behind
            p.unlink(missing_ok=True)
        if selection is not None:  # a refused job leaves its quote's selection for the next try
            service.controller.selections.setdefault(key, selection)
        raise
    service.controller.submit(job_id, selection, info)
    return job_id


@dataclass
class _Checked:
    raw: bytes | None  # inline training data as JSONL (to be written with the job)
    train_id: str | None
    train_path: str | None
    val_id: str | None
    val_path: str | None
    labels: list[str]


def _check_data(service: Service, t: Tenant, body: JobCreate) -> _Checked:
    """The job's data: its files are the tenant's, its labels two or more and in every row (reads only)."""
    cfg, store = service.cfg, service.store
    raw: bytes | None = None
    train_id: str | None = None
    train_path: str | None = None
    train_rows = 0
    val_id: str | None = None
    val_path: str | None = None
    try:
        if body.training_data is not None:
            raw = rows_to_jsonl([r.model_dump() for r in body.training_data])
            checked = check_jsonl(raw, "training_data")
            if checked.rows > cfg.max_rows:
                raise DataError(f"training_data: {checked.rows} rows is over the limit of {cfg.max_rows}")
            seen, train_raw, train_rows = list(checked.labels), raw, checked.rows
        with store.session() as s:
            if body.training_file is not None:
                train = own_file(s, t, body.training_file, "training_file")
                seen, train_raw, train_rows, train_id = (
                    list(train.labels),
                    Path(train.path).read_bytes(),
                    train.rows,
                    train.id,
                )
                train_path = train.path
            val = own_file(s, t, body.validation_file, "validation_file") if body.validation_file else None
            val_raw = Path(val.path).read_bytes() if val is not None else None
            val_id = val.id if val is not None else None
            val_path = val.path if val is not None else None
        labels = body.labels or seen
        if len(labels) < 2:
            raise DataError(f"training data has only the label(s) {labels}; a task needs two or more")
        check_labels(train_raw, labels, "training_file" if raw is None else "training_data")
        if val_raw is not None:
            check_labels(val_raw, labels, "validation_file")
        if train_rows < 2:
            raise DataError("training data needs at least 2 rows")
    except DataError as e:
        raise ApiError(422, str(e), param="training_data") from None
    return _Checked(raw, train_id, train_path, val_id, val_path, labels)


def _quote(
    service: Service,
    t: Tenant,
    body: JobCreate,
    job_id: str,
    deadline: float,
    now: float,
    selection: dict[str, Any] | None,
) -> tuple[Quote, dict[str, Any], dict[str, Any]]:
    """The policy's quote of the job planned with its predicted steps (``max_steps`` only the cap): the
    quote, its JSON (with how the work was predicted) and that prediction alone."""
    ctl = service.controller
    eval_every = body.hyperparameters.eval_every
    work, info = ctl.plan_work(
        body.model, body.bank_warm_start, body.max_steps, eval_every, selection, body.target_accuracy
    )
    spec = JobSpec(
        job_id=job_id,
        model=body.model,
        arrival=now,
        slo=SLO(deadline, body.target_accuracy, body.best_effort),
        work_steps=work,
        max_steps=body.max_steps,
        tenant=t.id,
        init="bank" if body.bank_warm_start else "random",
    )
    quote = ctl.quote(spec)
    info = {**info, "work_steps": round(work, 3)}
    return quote, {**quote_json(quote, with_iso=True), **info}, info


def quote_request(service: Service, t: Tenant, body: JobCreate) -> dict[str, Any]:
    """``POST /v1/quotes``: what ``POST /v1/jobs`` with this body would be quoted, creating nothing.

    With ``bank_warm_start`` and an uploaded training file, the Prompt Bank's selection runs now on a warm
    worker (its probes on the job's rows), so the quote plans with the bank's own prediction; the selection
    is kept for the job submitted with the same request (``ControllerConfig.selection_ttl_s``) and its time
    is charged to that job.  Otherwise the quote includes the selection still to run."""
    now = time.time()
    deadline = _check_request(service, t, body, now)
    data = _check_data(service, t, body)
    selection: dict[str, Any] | None = None
    if body.bank_warm_start and data.train_path is not None:
        payload = JobPayload(
            job_id="quote-" + secrets.token_hex(8),
            model=body.model,
            train_path=data.train_path,
            test_path=data.val_path,
            labels=tuple(data.labels),
            description=body.description,
            max_steps=body.max_steps,
            target_accuracy=body.target_accuracy,
            warm_start=True,
            bank_dir=service.controller.cfg.bank_dir,
            tenant=t.id,
            **{k: v for k, v in body.hyperparameters.model_dump().items() if v is not None},
        )
        try:
            selection = service.controller.preselect(selection_key(t, body), {"job": payload})
        except (LookupError, TimeoutError, RuntimeError) as e:
            raise ApiError(503, f"the Prompt Bank's selection could not run: {e}", "unavailable") from None
    quote, qj, info = _quote(service, t, body, "quote-" + secrets.token_hex(8), deadline, now, selection)
    out: dict[str, Any] = {"object": "quote", **qj, "deadline": deadline, "deadline_iso": iso_time(deadline)}
    if selection is not None:
        out["selection"] = {
            "init": selection.get("init"),
            "entry_task": selection.get("entry_task"),
            "probe_accuracy": selection.get("probe_accuracy"),
            "predicted_steps": selection.get("predicted_steps"),
            "chosen": selection.get("chosen"),
            "raced": selection.get("raced"),
            "no_race": selection.get("no_race"),
            "start_accuracy": selection.get("start_accuracy"),  # at or above the target: done at its start
            "race_steps": selection.get("race_steps"),
            "steps_done": selection.get("steps_done"),
            "candidates": selection.get("candidates"),
            "note": selection.get("note"),
            "seconds": round(float(selection.get("elapsed", 0.0)), 3),
        }
    return json_safe(out)  # type: ignore[no-any-return]


def _create_job_rows(
    service: Service,
    t: Tenant,
    body: JobCreate,
    job_id: str,
    deadline: float,
    now: float,
    written: list[Path],
    selection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate (reads only), quote (no transaction open), then write file and job in one transaction;
    returns how the job's work was predicted."""
    cfg, store = service.cfg, service.store
    d = _check_data(service, t, body)
    quote, qj, info = _quote(service, t, body, job_id, deadline, now, selection)
    if not quote.feasible and not body.best_effort:
        tight = finite(quote.tightest_deadline)
        msg = "the deadline cannot be met"
        if tight is not None:
            msg += f"; the tightest feasible deadline is {iso_time(tight)} ({tight:.0f})"
        raise ApiError(
            422,
            msg + "; set best_effort to run anyway",
            "infeasible_slo",
            "deadline",
            {"tightest_deadline": tight, "quote": qj},
        )
    with store.session() as s:
        train_id = d.train_id
        if d.raw is not None:
            f = store_file(s, store.home, t.id, f"{job_id}-train.jsonl", d.raw, cfg.max_rows)
            written.append(Path(f.path))
            train_id = f.id
        assert train_id is not None
        work = float(info["work_steps"])  # the predicted steps, not the max_steps cap
        s.add(_job_row(t, body, job_id, train_id, d.val_id, d.labels, deadline, qj, now, work))
    return info


def _job_row(
    t: Tenant,
    body: JobCreate,
    job_id: str,
    train_id: str,
    val_id: str | None,
    labels: list[str],
    deadline: float,
    quote: dict[str, Any],
    now: float,
    work_steps: float,
) -> Job:
    return Job(
        id=job_id,
        tenant_id=t.id,
        model=body.model,
        training_file=train_id,
        validation_file=val_id,
        labels=labels,
        description=body.description,
        target_accuracy=body.target_accuracy,
        max_steps=body.max_steps,
        hyperparameters=body.hyperparameters.model_dump(),
        bank_warm_start=body.bank_warm_start,
        best_effort=body.best_effort,
        deadline=deadline,
        work_steps=work_steps,
        quote=quote,
        phase=JobPhase.QUEUED.value,
        admitted=False,
        steps_done=0,
        gpu_seconds=0.0,
        checkpoint_step=0,
        init="random",
        created_at=now,
        updated_at=now,
    )
