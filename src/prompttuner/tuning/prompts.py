"""Tuned prompts on disk: one safetensors file, the tensor plus the metadata needed to reuse it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

PROMPT_KEY = "prompt"
PROMPT_FILE = "prompt.safetensors"


class PromptFileError(ValueError):
    """A prompt file is missing, corrupt or not a PromptTuner prompt."""


def save_prompt(path: str | Path, tensor: torch.Tensor, metadata: dict[str, Any]) -> Path:
    """Write ``tensor`` [num_virtual_tokens, embed_dim] and ``metadata`` (JSON-able values) atomically."""
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p / PROMPT_FILE
    p.parent.mkdir(parents=True, exist_ok=True)
    t = tensor.detach().to("cpu", torch.float32).contiguous()
    meta = dict(metadata)
    meta.setdefault("num_virtual_tokens", int(t.shape[0]))
    meta.setdefault("embed_dim", int(t.shape[1]))
    # safetensors metadata is str -> str: store every value JSON-encoded
    str_meta = {k: json.dumps(v) for k, v in meta.items()}
    tmp = p.with_name(f".{p.name}.tmp")
    save_file({PROMPT_KEY: t}, str(tmp), metadata=str_meta)
    tmp.replace(p)
    return p


def load_prompt(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read a prompt written by :func:`save_prompt` (a file, or a folder holding ``prompt.safetensors``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / PROMPT_FILE
    if not p.is_file():
        raise PromptFileError(f"{p}: no such prompt file")
    try:
        tensors = load_file(str(p))
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            raw_meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise PromptFileError(f"{p}: not a readable safetensors file ({exc})") from None
    if PROMPT_KEY not in tensors:
        raise PromptFileError(f"{p}: has no {PROMPT_KEY!r} tensor (found {sorted(tensors)})")
    t = tensors[PROMPT_KEY]
    if t.dim() != 2:
        raise PromptFileError(f"{p}: prompt tensor must be 2-D [tokens, dim], got shape {tuple(t.shape)}")
    meta: dict[str, Any] = {}
    for k, v in raw_meta.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    return t, meta
