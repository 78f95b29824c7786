"""The HTTP API: jobs, files, prompts, predictions, the cluster and metrics (OpenAPI at ``/docs``).

Shaped like the hosted fine-tuning job APIs: upload a file (or send rows inline), create a job that
references it, poll the job and its events, download the result.  The API is thin: it validates, writes
the rows (all in one transaction, so a rejected request leaves nothing behind) and hands the job to the
controller.  Every error is ``{"error": {"message", "type", "param"}}`` with a 4xx that names the problem.
Tenants authenticate with ``Authorization: Bearer <key>`` and only ever see their own jobs and files.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select

from prompttuner.api.data import DataError, check_jsonl, check_labels, rows_to_jsonl
from prompttuner.api.metrics import render_metrics
from prompttuner.core.types import SLO, Event, JobPhase, JobSpec
from prompttuner.service import Service
from prompttuner.state.models import DataFile, EventRow, Job, Tenant
from prompttuner.state.serial import finite, iso_time, quote_json

# ---------------------------------------------------------------------------------------------- schemas


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_virtual_tokens: int = Field(8, ge=1, le=256)
    lr: float | None = Field(None, gt=0, le=100, description="default: the engine's")
    batch_size: int = Field(4, ge=1, le=256)
    seed: int = 0
    eval_every: int = Field(5, ge=1, le=100_000)
    max_length: int = Field(64, ge=8, le=4096)
    max_eval: int = Field(64, ge=1, le=10_000)


class Row(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str = Field(min_length=1)
    label: str = Field(min_length=1)


class JobCreate(BaseModel):
    """A prompt-tuning job: base model, data, label words, target, step budget and SLO."""

    model_config = ConfigDict(extra="forbid")
    model: str
    training_file: str | None = Field(None, description="id of an uploaded file (POST /v1/files)")
    training_data: list[Row] | None = Field(None, description="rows inline, instead of training_file")
    validation_file: str | None = None
    labels: list[str] | None = Field(None, description="label words; default: the labels seen in the data")
    target_accuracy: float | None = Field(None, gt=0, le=1)
    max_steps: int = Field(100, ge=1)
    deadline: float | str | None = Field(None, description="epoch seconds or ISO 8601 with a time zone")
    duration_s: float | None = Field(None, gt=0, description="deadline as seconds from now")
    best_effort: bool = False
    bank_warm_start: bool = False
    hyperparameters: Hyperparameters = Field(default_factory=lambda: Hyperparameters.model_validate({}))

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if len(v) < 2:
            raise ValueError("give at least two label words")
        if len(set(v)) != len(v) or any(not x.strip() for x in v):
            raise ValueError("label words must be distinct and non-empty")
        return v


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job: str = Field(description="a succeeded job whose tuned prompt to use")
    texts: list[str] = Field(min_length=1, max_length=256)


class BankAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job: str
    public: bool = False


# ---------------------------------------------------------------------------------------------- errors


class ApiError(HTTPException):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status, message)
        self.type_, self.param, self.extra = type_, param, extra or {}


def _err(status: int, message: str, type_: str, param: str | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, **extra}}, status)


class BodyLimit:
    """Refuse bodies over the limit before they are read (413), uploads with their own larger limit."""

    def __init__(self, app: Any, max_body: int, max_upload: int) -> None:
        self.app, self.max_body, self.max_upload = app, max_body, max_upload

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload if scope["path"].startswith("/v1/files") else self.max_body
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = _err(413, f"request body is larger than the limit of {limit} bytes", "request_too_large")
        if length is not None and length.isdigit() and int(length) > limit:
            await too_big(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await too_big(scope, receive, send)


class _TooLarge(Exception):
    pass


# ---------------------------------------------------------------------------------------------- helpers


def _parse_deadline(body: JobCreate, now: float) -> float:
    if body.deadline is not None and body.duration_s is not None:
        raise ApiError(422, "give either deadline or duration_s, not both", param="deadline")
    if body.duration_s is not None:
        return now + body.duration_s
    if body.deadline is None:
        raise ApiError(
            422, "an SLO is required: give deadline (time) or duration_s (seconds)", param="deadline"
        )
    if isinstance(body.deadline, int | float):
        t = float(body.deadline)
    else:
        try:
            d = dt.datetime.fromisoformat(body.deadline)
        except ValueError:
            raise ApiError(
                422, f"deadline {body.deadline!r} is not ISO 8601 or epoch seconds", param="deadline"
            ) from None
        if d.tzinfo is None:
            raise ApiError(422, "deadline needs a time zone (e.g. 2026-01-01T12:00:00Z)", param="deadline")
        t = d.timestamp()
    if t <= now:
        raise ApiError(
            422, f"deadline {iso_time(t)} is in the past (now is {iso_time(now)})", param="deadline"
        )
    return t


def job_json(row: Job) -> dict[str, Any]:
    q = row.quote
    return {
        "id": row.id,
        "object": "prompt_tuning.job",
        "model": row.model,
        "status": row.phase,
        "created_at": row.created_at,
        "deadline": row.deadline,
        "deadline_iso": iso_time(row.deadline),
        "training_file": row.training_file,
        "validation_file": row.validation_file,
        "labels": row.labels,
        "target_accuracy": row.target_accuracy,
        "max_steps": row.max_steps,
        "hyperparameters": row.hyperparameters,
        "bank_warm_start": row.bank_warm_start,
        "best_effort": row.best_effort,
        "init": row.init,
        "quote": q,
        "progress": {
            "steps_done": row.steps_done,
            "accuracy": row.accuracy,
            "loss": row.loss,
            "checkpoint_step": row.checkpoint_step,
        },
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "deadline_met": row.deadline_met,
        "target_reached": row.target_reached,
        "gpu_seconds": round(row.gpu_seconds, 3),
        "prompt": f"/v1/jobs/{row.id}/prompt" if row.prompt_path else None,
        "error": row.error,
    }


def file_json(f: DataFile) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "filename": f.filename,
        "bytes": f.bytes,
        "rows": f.rows,
        "labels": f.labels,
        "created_at": f.created_at,
    }


# ---------------------------------------------------------------------------------------------- auth


def _tenant(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Tenant:
    key = x_api_key
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            key = token.strip()
    if not key:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", "authentication_error")
    t = request.app.state.service.store.tenant_for_key(key)
    if t is None:
        raise ApiError(401, "invalid API key", "authentication_error")
    return t  # type: ignore[no-any-return]


Auth = Annotated[Tenant, Depends(_tenant)]

# ---------------------------------------------------------------------------------------------- app


def create_app(service: Service, manage: bool = True) -> FastAPI:
    """The FastAPI app over ``service``; with ``manage`` the app starts and stops the service."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        if manage:
            service.start()
        try:
            yield
        finally:
            if manage:
                service.stop()

    app = FastAPI(
        title="PromptTuner",
        version="1",
        lifespan=lifespan,
        description="Prompt-Tuning-as-a-Service: SLO-aware elastic soft-prompt tuning.",
    )
    app.add_middleware(
        BodyLimit, max_body=service.cfg.max_request_bytes, max_upload=service.cfg.max_upload_bytes
    )
    app.state.service = service
    store = service.store
    ctl = service.controller
    cfg = service.cfg

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, e: ApiError) -> JSONResponse:
        return _err(e.status_code, str(e.detail), e.type_, e.param, **e.extra)

    @app.exception_handler(HTTPException)
    async def _http_error(_req: Request, e: HTTPException) -> JSONResponse:
        return _err(e.status_code, str(e.detail), "invalid_request_error")

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, e: RequestValidationError) -> JSONResponse:
        errs = list(e.errors())
        first: dict[str, Any] = dict(errs[0]) if errs else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        msg = f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))
        if first.get("type") == "json_invalid":
            ctx = first.get("ctx") or {}
            msg = f"malformed JSON body: {ctx.get('error', first.get('msg'))}"
        return _err(422, msg, "invalid_request_error", loc or None)

    # -- files ---------------------------------------------------------------------------------

    def _store_file(tid: str, filename: str, raw: bytes, s: Any) -> DataFile:
        checked = check_jsonl(raw, filename)
        if checked.rows > cfg.max_rows:
            raise DataError(f"{filename}: {checked.rows} rows is more than the limit of {cfg.max_rows}")
        fid = "file-" + secrets.token_hex(8)
        path = store.home / "files" / f"{fid}.jsonl"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(raw)
        tmp.replace(path)
        row = DataFile(
            id=fid,
            tenant_id=tid,
            filename=filename[:255],
            path=str(path),
            bytes=len(raw),
            rows=checked.rows,
            labels=list(checked.labels),
            created_at=time.time(),
        )
        s.add(row)
        return row

    @app.post("/v1/files", status_code=201, tags=["files"])
    def upload_file(
        t: Auth, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()] = "prompt-tune"
    ) -> dict[str, Any]:
        """Upload task data: JSON Lines of {"text", "label"}."""
        raw = file.file.read(cfg.max_upload_bytes + 1)
        if len(raw) > cfg.max_upload_bytes:
            raise ApiError(
                413,
                f"file is larger than the limit of {cfg.max_upload_bytes} bytes",
                "request_too_large",
                "file",
            )
        try:
            with store.session() as s:
                row = _store_file(t.id, file.filename or "upload.jsonl", raw, s)
        except DataError as e:
            raise ApiError(422, str(e), param="file") from None
        return file_json(row)

    @app.get("/v1/files", tags=["files"])
    def list_files(t: Auth) -> dict[str, Any]:
        with store.session() as s:
            rows = s.scalars(select(DataFile).where(DataFile.tenant_id == t.id).order_by(DataFile.created_at))
            return {"object": "list", "data": [file_json(f) for f in rows]}

    def _own_file(s: Any, t: Tenant, fid: str, param: str) -> DataFile:
        f = s.get(DataFile, fid)
        if f is None or f.tenant_id != t.id:
            raise ApiError(404, f"no file {fid!r}", param=param)
        return f

    # -- jobs ----------------------------------------------------------------------------------

    @app.post("/v1/jobs", status_code=201, tags=["jobs"])
    def create_job(t: Auth, body: JobCreate) -> JSONResponse:
        """Create a job; 201 with its quote, or 422 with the tightest feasible deadline."""
        now = time.time()
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
        deadline = _parse_deadline(body, now)
        if (body.training_file is None) == (body.training_data is None):
            raise ApiError(422, "give exactly one of training_file and training_data", param="training_file")
        job_id = "job-" + secrets.token_hex(8)
        written: list[Path] = []
        try:
            _create_job_rows(t, body, job_id, deadline, now, written)
        except BaseException:
            for p in written:  # nothing half-written: a rejected job leaves no file behind
                p.unlink(missing_ok=True)
            raise
        ctl.submit(job_id)
        with store.session() as s:
            return JSONResponse(job_json(s.get(Job, job_id)), 201)  # type: ignore[arg-type]

    def _create_job_rows(
        t: Tenant, body: JobCreate, job_id: str, deadline: float, now: float, written: list[Path]
    ) -> None:
        """Validate (reads only), quote (no transaction open), then write file and job in one transaction.

        No write transaction is held while the controller computes the quote: the controller writes to
        the same database, and SQLite has a single writer.
        """
        raw: bytes | None = None
        train_id: str | None = None
        train_rows = 0
        val_id: str | None = None
        try:
            if body.training_data is not None:
                raw = rows_to_jsonl([r.model_dump() for r in body.training_data])
                checked = check_jsonl(raw, "training_data")
                if checked.rows > cfg.max_rows:
                    raise DataError(f"training_data: {checked.rows} rows is over the limit of {cfg.max_rows}")
                seen, train_raw, train_rows = list(checked.labels), raw, checked.rows
            with store.session() as s:
                if body.training_file is not None:
                    train = _own_file(s, t, body.training_file, "training_file")
                    seen, train_raw, train_rows, train_id = (
                        list(train.labels),
                        Path(train.path).read_bytes(),
                        train.rows,
                        train.id,
                    )
                val = (
                    _own_file(s, t, body.validation_file, "validation_file") if body.validation_file else None
                )
                val_raw = Path(val.path).read_bytes() if val is not None else None
                val_id = val.id if val is not None else None
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
        spec = JobSpec(
            job_id=job_id,
            model=body.model,
            arrival=now,
            slo=SLO(deadline, body.target_accuracy, body.best_effort),
            work_steps=float(body.max_steps),
            max_steps=body.max_steps,
            tenant=t.id,
            init="bank" if body.bank_warm_start else "random",
        )
        quote = ctl.quote(spec)
        qj = quote_json(quote, with_iso=True)
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
            if raw is not None:
                f = _store_file(t.id, f"{job_id}-train.jsonl", raw, s)
                written.append(Path(f.path))
                train_id = f.id
            assert train_id is not None
            s.add(
                Job(
                    id=job_id,
                    tenant_id=t.id,
                    model=body.model,
                    training_file=train_id,
                    validation_file=val_id,
                    labels=labels,
                    target_accuracy=body.target_accuracy,
                    max_steps=body.max_steps,
                    hyperparameters=body.hyperparameters.model_dump(),
                    bank_warm_start=body.bank_warm_start,
                    best_effort=body.best_effort,
                    deadline=deadline,
                    work_steps=float(body.max_steps),
                    quote=qj,
                    phase=JobPhase.QUEUED.value,
                    admitted=False,
                    steps_done=0,
                    gpu_seconds=0.0,
                    checkpoint_step=0,
                    init="random",
                    created_at=now,
                    updated_at=now,
                )
            )

    def _own_job(s: Any, t: Tenant, job_id: str) -> Job:
        row = s.get(Job, job_id)
        if row is None or row.tenant_id != t.id:
            raise ApiError(404, f"no job {job_id!r}", param="job")
        return row  # type: ignore[no-any-return]

    @app.get("/v1/jobs", tags=["jobs"])
    def list_jobs(t: Auth, status: str | None = None, limit: int = 100) -> dict[str, Any]:
        with store.session() as s:
            q = select(Job).where(Job.tenant_id == t.id)
            if status:
                q = q.where(Job.phase == status)
            rows = s.scalars(q.order_by(Job.created_at.desc()).limit(max(1, min(limit, 1000))))
            return {"object": "list", "data": [job_json(r) for r in rows]}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def get_job(t: Auth, job_id: str) -> dict[str, Any]:
        with store.session() as s:
            return job_json(_own_job(s, t, job_id))

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"])
    def job_events(t: Auth, job_id: str, after: int = 0, limit: int = 1000) -> dict[str, Any]:
        """State changes, allocations and progress, oldest first (``after``: the last id you saw)."""
        with store.session() as s:
            _own_job(s, t, job_id)
            rows = s.scalars(
                select(EventRow)
                .where(EventRow.job_id == job_id, EventRow.id > after)
                .order_by(EventRow.id)
                .limit(max(1, min(limit, 10_000)))
            )
            return {
                "object": "list",
                "data": [
                    {"id": e.id, "time": e.time, "kind": e.kind, "worker": e.worker_id, "data": e.data}
                    for e in rows
                ],
            }

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel_job(t: Auth, job_id: str) -> dict[str, Any]:
        with store.session() as s:
            row = _own_job(s, t, job_id)
            if JobPhase(row.phase).terminal:
                raise ApiError(409, f"job {job_id} already ended ({row.phase})", param="job")
        ctl.cancel(job_id)
        with store.session() as s:
            return job_json(_own_job(s, t, job_id))

    @app.get("/v1/jobs/{job_id}/prompt", tags=["jobs"])
    def job_prompt(t: Auth, job_id: str) -> FileResponse:
        """The tuned soft prompt (safetensors)."""
        with store.session() as s:
            row = _own_job(s, t, job_id)
            if row.prompt_path is None or not Path(row.prompt_path).exists():
                raise ApiError(409, f"job {job_id} has no prompt yet ({row.phase})", param="job")
            return FileResponse(
                row.prompt_path, media_type="application/octet-stream", filename=f"{job_id}.safetensors"
            )

    @app.post("/v1/predict", tags=["prompts"])
    def predict(t: Auth, body: PredictRequest) -> dict[str, Any]:
        """Classify texts with a job's tuned prompt (runs on a warm worker of the job's model)."""
        with store.session() as s:
            row = _own_job(s, t, body.job)
            if row.prompt_path is None:
                raise ApiError(409, f"job {body.job} has no prompt yet ({row.phase})", param="job")
            model, path, labels = row.model, row.prompt_path, list(row.labels)
        try:
            preds = ctl.predict(model, path, body.texts, labels)
        except LookupError as e:
            raise ApiError(503, str(e), "unavailable") from None
        except TimeoutError:
            raise ApiError(504, "prediction timed out; the workers are busy", "timeout") from None
        except RuntimeError as e:
            raise ApiError(502, f"prediction failed: {e}", "worker_error") from None
        return {"object": "list", "job": body.job, "labels": labels, "predictions": preds}

    # -- bank ----------------------------------------------------------------------------------

    @app.get("/v1/bank/prompts", tags=["bank"])
    def bank_list(t: Auth) -> dict[str, Any]:
        """Prompt Bank entries this tenant may use: public ones and its own."""
        from prompttuner.api.bankview import BankUnavailable, list_entries

        try:
            return {"object": "list", "data": list_entries(str(ctl.cfg.bank_dir), t.id)}
        except BankUnavailable as e:
            raise ApiError(501, str(e), "unavailable") from None

    @app.post("/v1/bank/prompts", status_code=201, tags=["bank"])
    def bank_add(t: Auth, body: BankAdd) -> dict[str, Any]:
        """Add a succeeded job's prompt to the bank (private to this tenant unless ``public``)."""
        from prompttuner.api.bankview import BankUnavailable, add_prompt

        with store.session() as s:
            row = _own_job(s, t, body.job)
            if row.phase != JobPhase.SUCCEEDED.value or row.prompt_path is None:
                raise ApiError(409, f"job {body.job} has not succeeded ({row.phase})", param="job")
            train = s.get(DataFile, row.training_file)
            args: dict[str, Any] = {
                "job_id": row.id,
                "tenant": t.id,
                "model": row.model,
                "prompt_path": row.prompt_path,
                "labels": list(row.labels),
                "accuracy": row.accuracy,
                "steps": row.steps_done,
                "train_path": train.path if train else None,
            }
        try:
            entry = add_prompt(str(ctl.cfg.bank_dir), public=body.public, **args)
        except BankUnavailable as e:
            raise ApiError(501, str(e), "unavailable") from None
        except Exception as e:  # noqa: BLE001 - e.g. a prompt the bank cannot index
            raise ApiError(422, f"the Prompt Bank refused this prompt: {type(e).__name__}: {e}") from None
        store.add_events(
            [Event(time.time(), "bank", row.id, data={"added": True, "entry": entry, "public": body.public})]
        )
        return {"id": entry, "job": body.job, "public": body.public}

    # -- cluster and metrics -------------------------------------------------------------------

    @app.get("/v1/models", tags=["cluster"])
    def models(_t: Auth) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": m} for m in service.models]}

    @app.get("/v1/cluster", tags=["cluster"])
    def cluster(t: Auth) -> dict[str, Any]:
        info = ctl.cluster()
        with store.session() as s:
            mine = set(
                s.scalars(
                    select(Job.id).where(
                        Job.tenant_id == t.id, Job.phase.not_in([p.value for p in JobPhase if p.terminal])
                    )
                )
            )
            counts = dict(
                s.execute(
                    select(Job.phase, func.count()).where(Job.tenant_id == t.id).group_by(Job.phase)
                ).all()
            )
        for w in info["workers"]:  # other tenants' job ids stay private
            if w["job"] is not None and w["job"] not in mine:
                w["job"] = "(another tenant)"
        info["your_jobs"] = counts
        return info

    @app.get("/metrics", tags=["cluster"], response_class=Response)
    def metrics() -> Response:
        body, ctype = render_metrics(service)
        return Response(body, media_type=ctype)

    @app.get("/healthz", tags=["cluster"])
    def healthz() -> dict[str, Any]:
        return {"ok": ctl.loop_error is None, "loop_error": ctl.loop_error}

    return app
