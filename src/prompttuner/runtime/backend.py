"""Worker backends behind one interface: start a warm worker, send it a request, collect replies.

The controller speaks only this interface, so the embedded **local** backend (worker processes on this
machine, the default) and the **Ray** backend (actors holding GPUs) are interchangeable.  Every worker has
at most one request in flight; :meth:`Backend.poll` returns finished requests, and a worker that dies
(process exit, actor death, or a request past its time limit) comes back as a reply with ``failed`` set,
which is how the controller detects worker failure.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from prompttuner.runtime.engine import REAL_ENGINE


@dataclass
class Reply:
    worker_id: str
    op: str  # "load" for the end of a cold start
    ok: bool
    result: Any = None  # the op's result dict when ok
    error: str = ""  # what went wrong when not ok
    failed: bool = False  # the worker itself is gone (not just this request)


class Backend(ABC):
    """A pool of warm workers the controller can grow, shrink and send work to."""

    name = "abstract"

    def __init__(self, engine_spec: str = REAL_ENGINE, op_timeout_s: float = 600.0) -> None:
        self.engine_spec = engine_spec
        self.op_timeout_s = op_timeout_s

    @abstractmethod
    def start_worker(self, worker_id: str, model: str) -> None:
        """Start a worker that loads ``model``; a ``load`` reply arrives when it is warm (or failed)."""

    @abstractmethod
    def send(self, worker_id: str, op: str, args: dict[str, Any]) -> None:
        """Send one request; the worker must have nothing in flight."""

    @abstractmethod
    def poll(self, timeout: float) -> list[Reply]:
        """Replies that arrived, waiting at most ``timeout`` seconds for the first one."""

    @abstractmethod
    def stop_worker(self, worker_id: str) -> None:
        """Release a worker (graceful)."""

    @abstractmethod
    def kill_worker(self, worker_id: str) -> None:
        """Kill a worker abruptly (tests and fault injection); a failed reply follows."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop every worker."""


@dataclass
class _Proc:
    proc: Any  # multiprocessing.Process (spawn context)
    conn: Connection
    model: str
    inflight: str | None = "load"
    sent_at: float = 0.0
    dead: bool = False


class LocalBackend(Backend):
    """Worker processes on this machine, each holding its own copy of the base LLM."""

    name = "local"

    def __init__(
        self,
        engine_spec: str = REAL_ENGINE,
        op_timeout_s: float = 600.0,
        threads_per_worker: int = 1,
        load_timeout_s: float = 600.0,
    ) -> None:
        super().__init__(engine_spec, op_timeout_s)
        self.threads = threads_per_worker
        self.load_timeout_s = load_timeout_s
        self._ctx = mp.get_context("spawn")  # fork would copy the parent's threads and torch state
        self._procs: dict[str, _Proc] = {}

    def start_worker(self, worker_id: str, model: str) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_process_entry,
            args=(child, worker_id, model, self.engine_spec, self.threads),
            name=f"prompttuner-{worker_id}",
            daemon=True,
        )
        proc.start()
        child.close()
        self._procs[worker_id] = _Proc(proc, parent, model, inflight="load", sent_at=time.monotonic())

    def send(self, worker_id: str, op: str, args: dict[str, Any]) -> None:
        p = self._procs[worker_id]
        if p.inflight is not None:
            raise RuntimeError(f"worker {worker_id} is busy with {p.inflight!r}")
        p.inflight, p.sent_at = op, time.monotonic()
        if op == "switch":
            p.model = str(args["model"])
        try:
            p.conn.send((op, args))
        except (OSError, EOFError, BrokenPipeError):
            p.dead = True  # reported by the next poll

    def poll(self, timeout: float) -> list[Reply]:
        replies: list[Reply] = []
        now = time.monotonic()
        for wid, p in list(self._procs.items()):
            limit = self.load_timeout_s if p.inflight in ("load", "switch") else self.op_timeout_s
            if p.dead or (p.inflight is not None and now - p.sent_at > limit):
                why = "connection lost" if p.dead else f"{p.inflight!r} ran past {limit:.0f}s"
                replies.append(self._fail(wid, why))
        if replies:
            return replies
        waitables: dict[Any, str] = {}
        for wid, p in self._procs.items():
            waitables[p.conn] = wid
            waitables[p.proc.sentinel] = wid
        if not waitables:
            time.sleep(min(timeout, 0.05)) if timeout > 0 else None
            return []
        ready = wait(list(waitables), timeout=timeout)
        seen: set[str] = set()
        for obj in ready:
            wid = waitables[obj]
            if wid in seen or wid not in self._procs:
                continue
            seen.add(wid)
            p = self._procs[wid]
            msg = None
            if p.conn.poll():
                try:
                    msg = p.conn.recv()
                except (EOFError, OSError):
                    msg = None
            if msg is None:
                if not p.proc.is_alive() or obj is p.proc.sentinel or obj is p.conn:
                    code = p.proc.exitcode
                    replies.append(self._fail(wid, f"worker process exited (code {code})"))
                continue
            op, ok, payload = msg
            p.inflight = None
            if op in ("load", "switch") and not ok:
                replies.append(self._fail(wid, f"could not load model {p.model!r}: {payload}"))
                continue
            replies.append(
                Reply(wid, op, ok, result=payload if ok else None, error="" if ok else str(payload))
            )
        return replies

    def _fail(self, wid: str, why: str) -> Reply:
        p = self._procs.pop(wid)
        op = p.inflight or "idle"
        try:
            if p.proc.is_alive():
                p.proc.kill()
            p.proc.join(timeout=5)
        finally:
            p.conn.close()
        return Reply(wid, op, False, error=why, failed=True)

    def stop_worker(self, worker_id: str) -> None:
        p = self._procs.pop(worker_id, None)
        if p is None:
            return
        try:
            p.conn.send(None)
        except (OSError, EOFError, BrokenPipeError):
            pass
        p.proc.join(timeout=10)
        if p.proc.is_alive():
            p.proc.kill()
            p.proc.join(timeout=5)
        p.conn.close()

    def kill_worker(self, worker_id: str) -> None:
        p = self._procs.get(worker_id)
        if p is not None and p.proc.pid is not None:
            os.kill(p.proc.pid, 9)

    def shutdown(self) -> None:
        for wid in list(self._procs):
            self.stop_worker(wid)


def _process_entry(conn: Connection, worker_id: str, model: str, engine_spec: str, threads: int) -> None:
    from prompttuner.runtime.worker import process_main

    process_main(conn, worker_id, model, engine_spec, threads)
