"""The Prompt Bank's SQL tables (SQLAlchemy ORM): entries, index clusters, settings.

Vectors are stored as float32 blobs (:func:`vec_to_blob`, :func:`blob_to_vec`); the tensors themselves
live in files (:mod:`prompttuner.bank.tensors`), named and checksummed by their row.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import Float, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

PUBLIC = "public"  # the owner of entries that every tenant may see and start from


class Base(DeclarativeBase):
    pass


class EntryRow(Base):
    __tablename__ = "bank_entries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    embed_dim: Mapped[int] = mapped_column(Integer)
    num_tokens: Mapped[int] = mapped_column(Integer)
    task_name: Mapped[str] = mapped_column(String(200), default="")
    task_description: Mapped[str] = mapped_column(Text, default="")
    labels_json: Mapped[str] = mapped_column(Text, default="[]")
    accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    owner: Mapped[str] = mapped_column(String(200), default=PUBLIC, index=True)
    source_job: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tensor_file: Mapped[str] = mapped_column(String(300))
    tensor_sha256: Mapped[str] = mapped_column(String(64))
    task_vec: Mapped[bytes] = mapped_column(LargeBinary)
    prompt_vec: Mapped[bytes] = mapped_column(LargeBinary)
    cluster_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    extra_json: Mapped[str] = mapped_column(Text, default="{}")


class ClusterRow(Base):
    __tablename__ = "bank_clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    centroid: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer, default=0)
    rep_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class SettingRow(Base):
    __tablename__ = "bank_settings"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def vec_to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype=np.float32).tobytes()


def blob_to_vec(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.float32)
