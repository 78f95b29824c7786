"""Request bodies of the API (pydantic): what a client may send, with the limits on each field.

Every number a request carries is bounded here, so the OpenAPI shows the bounds and nothing out of them
is stored.  A few limits are the service's own (its models, ``max_steps_limit``, ``max_rows``): the API
checks them too, and the app writes them into its OpenAPI (``api.app``).  Types are strict (``true`` is
not the number 1, ``"5"`` is not an integer) and numbers finite.  Rules that a schema cannot state --
a deadline relative to now, label words that must match the data, a feasible SLO -- are checked when the
job is created (``api.job_creation``) and answered with 422.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator

# The patterns are matched with Python's re (regex_engine below), as a Python client and the checks in
# job_creation read them.

# -- the bounds (documented in the OpenAPI through the fields below) --------------------------------------
YEAR_S = 365 * 86400.0
MAX_DEADLINE_AHEAD_S = YEAR_S  # a deadline is at most a year ahead
MAX_EPOCH = 253402300799.0  # 9999-12-31T23:59:59Z, the last second an ISO 8601 time can show
MAX_STEPS = 1_000_000  # the schema's bound; a service's own max_steps_limit is lower (10,000 by default)
MAX_ROWS = 1_000_000  # the schema's bound on inline rows; a service's own max_rows is lower
MAX_TEXT_CHARS = 100_000  # one text (a training row's or one to classify)
MAX_LABEL_CHARS = 100  # one label word
MAX_LABELS = 64  # label words of a task
MAX_ID_CHARS = 64  # ids of jobs and files (the database's column width)
MAX_MODEL_CHARS = 128
MAX_DESCRIPTION_CHARS = 2_000  # a task's description
MAX_SEED = 2**32 - 1
INT64_MAX = 2**63 - 1  # cursors (event ids) are signed 64-bit

# an id of a job or file: what the service hands out (job-…, file-…), never a control character
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NONBLANK = r"\S"  # a label or text with something besides white space

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]
LabelWord = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_CHARS, pattern=NONBLANK)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS, pattern=NONBLANK)]
# a description is stored as text (PostgreSQL refuses NUL): something besides white space, and no NUL
NO_NUL_NONBLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"
Description = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_DESCRIPTION_CHARS, pattern=NO_NUL_NONBLANK)
]


def _whole(v: object) -> object:
    """2.0 is the integer 2, as JSON Schema has it (``true`` and ``"2"`` stay refused: types are strict)."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


Int = Annotated[int, BeforeValidator(_whole)]

# a time with a zone, RFC 3339 (what JSON Schema calls date-time): 2026-01-01T12:00:00Z
# (matched whole, with fullmatch; ASCII digits only)
DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
DATE_TIME_NO_ZONE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?")


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, regex_engine="python-re")
    num_virtual_tokens: Int = Field(8, ge=1, le=256, description="length of the soft prompt")
    lr: float | None = Field(None, gt=0, le=10, description="learning rate; default: the engine's")
    batch_size: Int = Field(4, ge=1, le=256)
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    eval_every: Int = Field(5, ge=1, le=MAX_STEPS, description="steps between evaluations")
    max_length: Int = Field(64, ge=8, le=4096, description="tokens of a text")
    max_eval: Int = Field(64, ge=1, le=10_000, description="validation rows an evaluation uses")
    bank_race: bool = Field(
        True,
        description="with bank_warm_start: race the best bank start against the job's text init (a few "
        "steps each; the loser's steps are the job's) unless the best start already meets the target on the "
        "probe rows or on the validation rows; false: take the probe's best start as it is (no race "
        "steps: for a tight deadline)",
    )
    # constraints before the validator: so the schema says minimum / maximum inside the union
    bank_fallback_at: Annotated[int, Field(ge=1, le=MAX_STEPS), BeforeValidator(_whole)] | None = Field(
        None,
        description="with bank_warm_start: at the job's first evaluation at or after this step, a start "
        "(bank prompt or text init) more than bank_fallback_rows validation rows below the target is "
        "dropped and the job goes on from random init with the steps left (the dropped steps are the job's); "
        "null (the default): never; 5 was measured (benchmarks/results/bank_stream_fallback/)",
    )
    bank_fallback_rows: Int = Field(2, ge=0, le=10_000, description="see bank_fallback_at")


class Row(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, regex_engine="python-re")
    text: Text
    label: LabelWord


class JobCreate(BaseModel):
    """A prompt-tuning job: base model, data, label words, target, step budget and SLO.

    Give exactly one of ``training_file`` and ``training_data``, and exactly one of ``deadline`` and
    ``duration_s``; the deadline must be in the future and at most a year (31,536,000 s) ahead.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, regex_engine="python-re")
    model: str = Field(min_length=1, max_length=MAX_MODEL_CHARS, description="one of GET /v1/models")
    training_file: Id | None = Field(None, description="id of an uploaded file (POST /v1/files)")
    training_data: list[Row] | None = Field(
        None, max_length=MAX_ROWS, description="rows inline, instead of training_file"
    )
    validation_file: Id | None = None
    labels: list[LabelWord] | None = Field(
        None,
        max_length=MAX_LABELS,
        json_schema_extra={"minItems": 2, "uniqueItems": True},
        description="distinct label words; default: the labels seen in the data",
    )
    description: Description | None = Field(
        None,
        description="what the task is, in a sentence (e.g. 'Is this SMS spam or not?'): the instruction the "
        "job's text init is made of, and, with the label words and sample rows, what the Prompt Bank matches "
        "against earlier tasks; default: one made from the label words",
    )
    target_accuracy: float | None = Field(None, gt=0, le=1)
    max_steps: Int = Field(100, ge=1, le=MAX_STEPS, description="the step budget")
    deadline: (
        Annotated[float, Field(gt=0, le=MAX_EPOCH)]
        | Annotated[str, Field(max_length=40, json_schema_extra={"format": "date-time"})]
        | None
    ) = Field(
        None,
        description="epoch seconds or an RFC 3339 time with a zone (2026-01-01T12:00:00Z); in the future "
        "and at most a year ahead",
    )
    duration_s: float | None = Field(
        None, gt=0, le=MAX_DEADLINE_AHEAD_S, description="the deadline as seconds from now (at most a year)"
    )
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
        if len(set(v)) != len(v):
            raise ValueError("label words must be distinct")
        return v


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, regex_engine="python-re")
    job: Id = Field(description="a succeeded job whose tuned prompt to use")
    texts: list[Text] = Field(min_length=1, max_length=256)


class BankAdd(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, regex_engine="python-re")
    job: Id
    public: bool = False
