"""A warm worker: one base LLM loaded once, then training steps of whichever job it is handed (or a
``switch``: unload the model, load another in its place).

:class:`WorkerCore` holds no transport: the local backend runs it in a child process behind a pipe
(:func:`process_main`), the Ray backend inside an actor.  Every request carries the job's state and its
``version`` (the controller's counter of state updates), so a worker can serve any job at any step
boundary; it keeps a few sessions cached so that a job that stays on a worker does not pay for restoring
its state on every chunk.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import traceback
from collections import OrderedDict
from typing import Any

from prompttuner.core.slo import eval_due
from prompttuner.runtime.engine import JobPayload, Session, WarmStartUnavailable, load_engine

MAX_CACHED_SESSIONS = 4


class WorkerCore:
    def __init__(self, worker_id: str, model: str, engine_spec: str) -> None:
        self.worker_id = worker_id
        self.model = model
        self.engine = load_engine(engine_spec)
        t0 = time.monotonic()
        self.loaded = self.engine.load_model(model)
        self.load_s = time.monotonic() - t0
        self._sessions: OrderedDict[str, tuple[int, Session]] = OrderedDict()
        self.calibration = self.calibrate()

    def calibrate(self) -> list[float]:
        """Seconds of a few training steps of a typical job, timed here as the worker warms up (so the
        first quotes plan with this machine's step time, not a default); [] when the engine has no
        ``calibrate`` or it fails (the default step time stays until a job's steps are measured)."""
        fn = getattr(self.engine, "calibrate", None)
        if fn is None or os.environ.get("PROMPTTUNER_CALIBRATE", "1") == "0":
            return []
        try:
            return [float(x) for x in fn(self.loaded)]
        except Exception:  # noqa: BLE001 - a calibration is an estimate: never fail a warm worker for it
            return []

    def ready_info(self) -> dict[str, Any]:
        """What the worker tells the controller once warm."""
        return {"load_s": self.load_s, "pid": os.getpid(), "calibration": self.calibration}

    # -- sessions --------------------------------------------------------------------------------

    def _session(self, job: JobPayload, state: bytes | None, version: int) -> Session:
        cached = self._sessions.get(job.job_id)
        if cached is not None and cached[0] == version:
            self._sessions.move_to_end(job.job_id)
            return cached[1]
        sess = self.engine.open(self.loaded, job, state)
        self._remember(job.job_id, version, sess)
        return sess

    def _remember(self, job_id: str, version: int, sess: Session) -> None:
        self._sessions[job_id] = (version, sess)
        self._sessions.move_to_end(job_id)
        while len(self._sessions) > MAX_CACHED_SESSIONS:
            self._sessions.popitem(last=False)

    # -- requests --------------------------------------------------------------------------------

    def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        t0 = time.monotonic()
        fn = getattr(self, f"_op_{op}", None)
        if fn is None:
            raise ValueError(f"unknown worker op {op!r}")
        result: dict[str, Any] = fn(**args)
        result["elapsed"] = time.monotonic() - t0
        return result

    def _op_train(
        self, job: JobPayload, state: bytes | None, version: int, steps: int, budget_s: float
    ) -> dict[str, Any]:
        """Run up to ``steps`` steps (or until ``budget_s`` passes, or the target is reached)."""
        sess = self._session(job, state, version)
        t0 = time.monotonic()
        loss_sum, ran, accuracy, eval_s = 0.0, 0, None, 0.0
        while ran < steps and sess.steps_done < job.max_steps:
            loss_sum += sess.step()
            ran += 1
            if _eval_due(job, sess.steps_done):
                e0 = time.monotonic()
                accuracy = sess.evaluate()
                eval_s += time.monotonic() - e0
                if job.target_accuracy is not None and accuracy >= job.target_accuracy:
                    break
            if time.monotonic() - t0 >= budget_s:
                break
        self._remember(job.job_id, version + 1, sess)
        return {
            "state": sess.state(),
            "version": version + 1,
            "steps_done": sess.steps_done,
            "steps_run": ran,
            "loss": loss_sum / ran if ran else None,
            "accuracy": accuracy,
            "val_rows": getattr(sess, "val_rows", None) if accuracy is not None else None,
            "eval_s": eval_s,  # of the reply's time, spent evaluating (timed apart from the steps)
        }

    def _op_grad(
        self, job: JobPayload, state: bytes | None, version: int, index: int, count: int
    ) -> dict[str, Any]:
        sess = self._session(job, state, version)
        return {"grad": sess.shard_gradient(index, count), "version": version}

    def _op_apply(
        self, job: JobPayload, state: bytes | None, version: int, grads: list[bytes]
    ) -> dict[str, Any]:
        sess = self._session(job, state, version)
        loss = sess.apply_gradients(grads)
        accuracy = sess.evaluate() if _eval_due(job, sess.steps_done) else None
        self._remember(job.job_id, version + 1, sess)
        return {
            "state": sess.state(),
            "version": version + 1,
            "steps_done": sess.steps_done,
            "steps_run": 1,
            "loss": loss,
            "accuracy": accuracy,
            "val_rows": getattr(sess, "val_rows", None) if accuracy is not None else None,
        }

    def _op_export(self, job: JobPayload, state: bytes | None, version: int, path: str) -> dict[str, Any]:
        sess = self._session(job, state, version)
        tmp = path + ".tmp"
        sess.export_prompt(tmp)
        os.replace(tmp, path)  # a reader never sees half a prompt file
        return {"path": path}

    def _op_select(self, job: JobPayload) -> dict[str, Any]:
        """Warm start from the Prompt Bank; a clear note instead of an error when the bank is unusable."""
        try:
            out = dict(self.engine.warm_start(self.loaded, job))
        except WarmStartUnavailable as e:
            return {"state": None, "init": "random", "note": str(e)}
        return out

    def _op_switch(self, model: str) -> dict[str, Any]:
        """Unload the base LLM and load ``model`` in its place (the sessions of the old one go too)."""
        t0 = time.monotonic()
        self._sessions.clear()
        unload = getattr(self.engine, "unload_model", None)
        if unload is not None:
            unload(self.loaded)
        self.loaded = None
        gc.collect()
        t1 = time.monotonic()
        self.loaded = self.engine.load_model(model)
        self.model = model
        self.load_s = time.monotonic() - t1
        return {"unload_s": t1 - t0, "load_s": self.load_s}  # no calibration: a switch stays quick

    def _op_predict(self, prompt_path: str, texts: list[str], labels: list[str]) -> dict[str, Any]:
        return {"predictions": self.engine.predict(self.loaded, prompt_path, texts, labels)}


def _eval_due(job: JobPayload, steps_done: int) -> bool:
    return eval_due(steps_done, job.eval_every, job.max_steps)


QUIET_ENV = {
    "TQDM_DISABLE": "1",  # tqdm (transformers' weight loading, gguf conversion)
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def quiet_libraries() -> None:
    """No library progress bars or advice from a worker: its output would interleave with the service's
    (two workers loading a model print two bars over each other).  Before the libraries are imported."""
    for k, v in QUIET_ENV.items():
        os.environ[k] = v
    tf = sys.modules.get("transformers")  # already imported (a worker in this process): tell it directly
    if tf is not None:
        tf.utils.logging.disable_progress_bar()
        tf.utils.logging.set_verbosity_error()


def format_error(e: BaseException) -> str:
    """One line naming the problem, plus where it came from (the last frame), for events and the API."""
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {e}{where}"


def process_main(conn: Any, worker_id: str, model: str, engine_spec: str, threads: int) -> None:
    """Entry point of a local worker process: load once, then answer requests until told to stop."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # before torch is imported (by the engine)
    quiet_libraries()
    try:
        core = WorkerCore(worker_id, model, engine_spec)
    except BaseException as e:  # the model could not be loaded: say why, then exit
        conn.send(("load", False, format_error(e)))
        return
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    conn.send(("load", True, core.ready_info()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the controller went away
        if msg is None:
            return
        op, args = msg
        try:
            reply: tuple[str, bool, Any] = (op, True, core.handle(op, args))
        except Exception as e:
            reply = (op, False, format_error(e))
        try:
            conn.send(reply)
        except (OSError, EOFError):
            return  # the controller went away
