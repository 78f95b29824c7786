"""The Ray backend: each worker is an actor holding one GPU (real, or fake GPUs on a local cluster).

The actor wraps the same :class:`~prompttuner.runtime.worker.WorkerCore` as a local worker process, so
the controller cannot tell the two apart.  Ray waits forever for resources it cannot find, so a worker
that is not warm within ``load_timeout_s`` is reported as failed instead of hanging the controller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from prompttuner.runtime.backend import Backend, Reply
from prompttuner.runtime.engine import REAL_ENGINE


class _ActorBody:
    def __init__(self, worker_id: str, model: str, engine_spec: str, threads: int) -> None:
        import os

        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(threads)
        self.args = (worker_id, model, engine_spec)
        self.core: Any = None

    def load(self) -> dict[str, Any]:
        from prompttuner.runtime.worker import WorkerCore

        self.core = WorkerCore(*self.args)
        return dict(self.core.ready_info())

    def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.core.handle(op, args)
        return result


@dataclass
class _Actor:
    handle: Any
    model: str
    inflight: str | None
    ref: Any
    sent_at: float


class RayBackend(Backend):
    name = "ray"

    def __init__(
        self,
        engine_spec: str = REAL_ENGINE,
        op_timeout_s: float = 600.0,
        load_timeout_s: float = 600.0,
        gpus_per_worker: float | None = None,
        threads_per_worker: int = 1,
        address: str | None = None,
        num_gpus: int | None = None,
    ) -> None:
        """``address``: an existing cluster (default: start a local one, with ``num_gpus`` declared GPUs
        if given, e.g. fake GPUs for a CPU machine).  ``gpus_per_worker``: None means one GPU per worker
        when the cluster has GPUs, else CPU-only actors."""
        super().__init__(engine_spec, op_timeout_s)
        import ray

        self._ray = ray
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None and num_gpus is not None:
                kw["num_gpus"] = num_gpus
            ray.init(address=address, **kw)
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        self.load_timeout_s = load_timeout_s
        self.gpus = gpus_per_worker
        self.threads = threads_per_worker
        self._cls: Any = ray.remote(_ActorBody)
        self._actors: dict[str, _Actor] = {}

    def start_worker(self, worker_id: str, model: str) -> None:
        handle = self._cls.options(  # type: ignore[attr-defined]
            num_gpus=self.gpus, num_cpus=0, name=None, max_restarts=0
        ).remote(worker_id, model, self.engine_spec, self.threads)
        self._actors[worker_id] = _Actor(handle, model, "load", handle.load.remote(), time.monotonic())

    def send(self, worker_id: str, op: str, args: dict[str, Any]) -> None:
        a = self._actors[worker_id]
        if a.inflight is not None:
            raise RuntimeError(f"worker {worker_id} is busy with {a.inflight!r}")
        a.inflight, a.sent_at = op, time.monotonic()
        if op == "switch":
            a.model = str(args["model"])
        a.ref = a.handle.handle.remote(op, args)

    def poll(self, timeout: float) -> list[Reply]:
        ray = self._ray
        replies: list[Reply] = []
        now = time.monotonic()
        for wid, a in list(self._actors.items()):
            limit = self.load_timeout_s if a.inflight in ("load", "switch") else self.op_timeout_s
            if a.inflight is not None and now - a.sent_at > limit:
                replies.append(self._fail(wid, f"{a.inflight!r} ran past {limit:.0f}s"))
        if replies:
            return replies
        refs = {a.ref: wid for wid, a in self._actors.items() if a.inflight is not None}
        if not refs:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=timeout)
        if ready:  # collect everything else that is already done too
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        for ref in ready:
            wid = refs[ref]
            a = self._actors[wid]
            op = a.inflight or "idle"
            try:
                value = ray.get(ref, timeout=30)
            except ray.exceptions.RayActorError as e:
                replies.append(self._fail(wid, f"actor died: {str(e).splitlines()[0]}"))
                continue
            except ray.exceptions.RayTaskError as e:
                a.inflight = None
                cause = e.cause if getattr(e, "cause", None) is not None else e
                msg = f"{type(cause).__name__}: {cause}".splitlines()[0]
                if op in ("load", "switch"):
                    replies.append(self._fail(wid, f"could not load model {a.model!r}: {msg}"))
                else:
                    replies.append(Reply(wid, op, False, error=msg))
                continue
            a.inflight = None
            replies.append(Reply(wid, op, True, result=value))
        return replies

    def _fail(self, wid: str, why: str) -> Reply:
        a = self._actors.pop(wid)
        try:
            self._ray.kill(a.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - the actor may be gone already
            pass
        return Reply(wid, a.inflight or "idle", False, error=why, failed=True)

    def stop_worker(self, worker_id: str) -> None:
        a = self._actors.pop(worker_id, None)
        if a is not None:
            self._ray.kill(a.handle, no_restart=True)

    def kill_worker(self, worker_id: str) -> None:
        a = self._actors.get(worker_id)
        if a is not None:
            self._ray.kill(a.handle, no_restart=True)

    def shutdown(self) -> None:
        for wid in list(self._actors):
            self.stop_worker(wid)
