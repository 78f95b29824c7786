"""Request bodies of the API (pydantic): what a client may send, with the limits on each field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
