"""Work going out to workers and replies coming back.

Work goes out in units that end at a step boundary, so that is where jobs move:

- a job on one worker gets a *chunk*: steps until ``chunk_s`` seconds pass or the target is reached;
- a job on ``n > 1`` workers runs data-parallel *rounds*: each worker computes the gradient of its shard
  of the same batch from the same state, then the lead applies them all (one optimiser step);
- a job not yet warm-started gets a ``select`` (the Prompt Bank's choice of its initial prompt), and a
  finished one an ``export`` of its prompt.

Every unit returns the job's whole trainable state (kilobytes), which is checkpointed at once; a worker
that dies loses at most the unit in flight.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from prompttuner.core.slo import fallback_check_step, lag_threshold, lags_target, target_reached
from prompttuner.core.types import Event, JobPhase, Switch
from prompttuner.runtime.backend import Reply
from prompttuner.runtime.jobstate import ControllerBase
from prompttuner.runtime.records import JobRT, Round, WorkerRec
from prompttuner.state.models import Job

START_KEYS = (  # what a job's quote keeps of its start
    "init",
    "chosen",
    "kind",
    "entry_task",
    "probe_accuracy",
    "predicted_steps",
    "lr",
    "raced",
    "no_race",
    "start_accuracy",
    "steps_done",
    "race_steps",
    "select_s",
)


class Dispatch(ControllerBase):
    _next_round: Any  # an itertools.count of round ids

    def _on_reply(self, r: Reply, now: float) -> None:
        w = self.workers.get(r.worker_id)
        if w is None:
            return
        if r.op == "switch" and not r.ok and not r.failed:
            # its model is unloaded and the other did not load: the worker is of no use any more
            self.backend.stop_worker(w.worker_id)
            r = Reply(r.worker_id, r.op, False, error=r.error, failed=True)
        if r.failed:
            self._on_worker_failed(w, r, now)
            return
        if r.op in ("load", "switch"):
            self.load_health.pop(w.model, None)  # it loads: the backoff is over
            w.ready_at, w.idle_since = now, now
            began = w.load_from if w.load_from is not None else w.requested_at
            data: dict[str, Any] = {"model": w.model, "load_s": r.result.get("load_s")}
            if r.op == "load":
                w.pid = r.result.get("pid")
                self.profiles.observe_load(w.model, now - began)  # the whole cold start
                if r.result.get("load_s"):
                    self.profiles.observe_weights(w.model, float(r.result["load_s"]))
            else:
                w.op, w.op_job = None, None
                self.profiles.observe_switch(w.model, now - began)
                data.update(switched_from=w.switch_from, switch_s=round(now - began, 3))
                w.switch_from = None
            cal = [float(x) for x in r.result.get("calibration") or () if x and x > 0]
            if cal:  # steps timed as it warmed up, beside the workers loading or busy with it
                busy = 1 + sum(
                    1 for x in self.workers.values() if x is not w and (x.ready_at is None or x.op)
                )
                for s in cal:
                    self.profiles.observe_step(w.model, s, busy=busy)
                data.update(calibration_step_s=round(sorted(cal)[len(cal) // 2], 4), calibration_busy=busy)
            self._emit(Event(now, "worker_ready", worker_id=w.worker_id, data=data))
            if w.releasing and w.job_id is None:
                self._release_worker(w, now)
                return
            owner = self.jobs.get(w.job_id) if w.job_id is not None else None
            if owner is not None:
                self._mark_running(owner, now)  # its first replica is ready (as in the simulator)
            self._need_decide = True
            return
        elapsed = float(r.result.get("elapsed", now - w.op_started)) if r.ok else now - w.op_started
        w.busy_s += elapsed
        job_id, fut = w.op_job, w.op_future
        w.op, w.op_job, w.op_future = None, None, None
        if r.op == "select" and r.ok:
            self.profiles.observe_select(w.model, elapsed)  # quotes of bank jobs include this time
        if w.releasing and w.job_id is None:
            self._release_worker(w, now)
        if fut is not None:
            if r.ok:
                fut.set_result({**r.result, "elapsed": elapsed})
            else:
                fut.set_exception(RuntimeError(r.error))
            return
        rt = self.jobs.get(job_id) if job_id else None
        if rt is None:
            return  # the job ended (cancelled) while this request ran
        rt.inflight.discard(w.worker_id)
        rt.gpu_seconds += elapsed
        if not r.ok:
            self._detach_all(rt, now)
            self._close(
                rt,
                JobPhase.FAILED,
                now,
                kind="fail",
                data={"error": r.error, "op": r.op},
                error=f"{r.op} failed on {w.worker_id}: {r.error}",
            )
            self._need_decide = True
            return
        res = r.result
        if r.op in ("train", "apply"):
            if r.op == "train" and res["steps_run"]:
                eval_s = min(elapsed, float(res.get("eval_s") or 0.0))
                self.profiles.observe_eval(rt.payload.model, eval_s, int(res["steps_run"]))
                per_step = (elapsed - eval_s) / res["steps_run"]  # a step's time; evaluations apart
                nominal = self.profiles.profile(rt.payload.model).step_time_s[self.cfg.gpu_type]
                rt.step_factor = per_step / nominal if nominal > 0 else 1.0  # this job against its model
                self.profiles.observe_step(rt.payload.model, per_step, busy=max(1, w.peak_busy))
            if r.op == "apply" and rt.round is not None:
                # a data-parallel round of n replicas: the single-replica step time it implies (n shards of
                # the slowest shard's time, plus applying); an estimate, used until chunks measure directly
                n = len(rt.round.workers)
                self.profiles.observe_step(rt.payload.model, rt.round.grad_s * n + elapsed, weak=True)
                rt.round = None
            self._accept(rt, res, now, worker=w.worker_id)
        elif r.op == "grad":
            rnd = rt.round
            if rnd is None or res.get("version") != rnd.version or w.worker_id not in rnd.workers:
                return  # a round abandoned after a failure: its shards are useless
            rnd.grads[rnd.workers.index(w.worker_id)] = res["grad"]
            rnd.grad_s = max(rnd.grad_s, elapsed)
            if len(rnd.grads) == len(rnd.workers):
                lead = self.workers.get(rnd.workers[0])
                if lead is None or lead.op is not None:
                    rt.round = None
                    return
                grads = [rnd.grads[i] for i in range(len(rnd.workers))]
                self._send(
                    lead,
                    rt,
                    "apply",
                    {"job": rt.payload, "state": rt.state, "version": rt.version, "grads": grads},
                    now,
                )
        elif r.op == "select":
            self._take_start(rt, res, now, w.worker_id)
            self._save(rt, now, init=rt.init, steps_done=rt.steps_done, **self._selected_work(rt, res))
            self._note_start(rt, res, now)
        elif r.op == "export":
            self._finish(rt, str(res["path"]), now)

    def _on_worker_failed(self, w: WorkerRec, r: Reply, now: float) -> None:
        self.workers.pop(w.worker_id, None)
        self.released_gpu_s += now - w.requested_at
        if w.op_future is not None and not w.op_future.done():
            w.op_future.set_exception(RuntimeError(f"worker {w.worker_id} failed: {r.error}"))
        affected = {j for j in (w.job_id, w.op_job) if j}
        if w.ready_at is None:  # it never got warm: the model may not load at all
            self._load_failure(w.model, r.error, now)
        self._emit(
            Event(
                now,
                "worker_fail",
                worker_id=w.worker_id,
                data={"error": r.error, "op": r.op, "jobs": sorted(affected)},
            )
        )
        for jid in affected:
            rt = self.jobs.get(jid)
            if rt is None:
                continue
            rt.inflight.discard(w.worker_id)
            if w.op_job == jid and w.op is not None:
                rt.gpu_seconds += now - w.op_started  # the lost work still cost GPU time
            if rt.round is not None and w.worker_id in rt.round.workers:
                rt.round = None
            if w.worker_id in rt.workers:
                rt.workers.remove(w.worker_id)
            self._emit(
                Event(
                    now,
                    "fail",
                    jid,
                    w.worker_id,
                    data={"error": r.error, "recovered_from_step": rt.steps_done, "worker_lost": True},
                )
            )
            if not rt.workers and rt.phase in (JobPhase.RUNNING, JobPhase.SELECTING):
                self._set_phase(rt, JobPhase.QUEUED, now)
        self._need_decide = True

    def _accept(self, rt: JobRT, res: dict[str, Any], now: float, worker: str) -> None:
        rt.state = res["state"]
        rt.version = int(res["version"])
        rt.steps_done = int(res["steps_done"])
        if res.get("loss") is not None:
            rt.loss = float(res["loss"])
        evaluated = res.get("accuracy") is not None
        if evaluated:
            rt.accuracy = float(res["accuracy"])
            target = rt.payload.target_accuracy
            rt.target_reached = target is not None and rt.accuracy >= target
            if not rt.target_reached and self._lags(rt, res):
                self._fall_back(rt, res, now, worker)
                return
        if not rt.done and rt.steps_done >= rt.work_steps:  # past its estimate, target not reached yet
            p = rt.payload
            rt.work_steps = self.work.refresh(rt.work_steps, rt.steps_done, p.max_steps, p.eval_every)
            self._save(rt, now, work_steps=rt.work_steps)
            self._need_decide = True
        self._checkpoint(rt)
        self._save(
            rt,
            now,
            steps_done=rt.steps_done,
            accuracy=rt.accuracy,
            loss=rt.loss,
            gpu_seconds=rt.gpu_seconds,
            checkpoint_step=rt.steps_done,
            checkpoint_path=str(self._ckpt_path(rt)),
        )
        if evaluated or rt.done or now - rt.last_progress_event >= self.cfg.progress_event_every_s:
            rt.last_progress_event = now
            self._emit(
                Event(
                    now,
                    "progress",
                    rt.job_id,
                    worker,
                    data={
                        "steps_done": rt.steps_done,
                        "loss": rt.loss,
                        "accuracy": rt.accuracy if evaluated else None,
                        "replicas": max(1, len(rt.workers)),
                        # the checkpoint written just above (one per unit; the events are thinned)
                        "checkpoint_step": rt.steps_done,
                    },
                )
            )

    def _check_step(self, rt: JobRT) -> int | None:
        """The step of the fallback's check for this job (``core.slo.fallback_check_step``), or None: no
        check (off, no target, a random-init start, or no budget after it)."""
        p = rt.payload
        if p.bank_fallback_at is None or p.target_accuracy is None or rt.init == "random":
            return None
        at = fallback_check_step(p.bank_fallback_at, p.eval_every)
        return at if at < p.max_steps else None

    def _unit_steps(self, rt: JobRT) -> int:
        """Steps of the job's next training unit: what its budget leaves, ending at the fallback's check
        while that is still to come, so the check reads the accuracy there (a unit only stops early at its
        target)."""
        steps = rt.payload.max_steps - rt.steps_done
        at = self._check_step(rt)
        return steps if at is None or rt.steps_done >= at else min(steps, at - rt.steps_done)

    def _lags(self, rt: JobRT, res: dict[str, Any]) -> bool:
        """The fallback's one check (``JobPayload.bank_fallback_at``): at its step, is the job's start (a
        bank prompt or its text init) too far below the target?  (Derived from the step alone: a job
        recovered past it is not checked again; one that fell back runs from random init.)"""
        p = rt.payload
        if rt.accuracy is None or p.target_accuracy is None or rt.steps_done != self._check_step(rt):
            return False
        return lags_target(rt.accuracy, p.target_accuracy, self._rows(rt, res), p.bank_fallback_rows)

    @staticmethod
    def _rows(rt: JobRT, res: dict[str, Any]) -> int:
        """Validation rows of the evaluation in ``res`` (the worker says; else the payload's cap)."""
        return int(res.get("val_rows") or rt.payload.max_eval)

    def _fall_back(self, rt: JobRT, res: dict[str, Any], now: float, worker: str) -> None:
        """Drop the job's start: it goes on from random init (no state: the worker opens the job's own
        random-init trainer) with the steps it has left; the dropped steps count as the job's, like a
        race's losers' (``race_steps``).  The checkpoint written here names the reduced budget: a
        recovery after this goes on with it (``Recovery._restore_budget``)."""
        p = rt.payload
        spent, was = rt.steps_done, rt.init
        rt.payload = replace(p, max_steps=p.max_steps - spent)
        rt.race_steps += spent
        rt.state, rt.version, rt.steps_done, rt.init = None, rt.version + 1, 0, "random"
        acc, rt.accuracy = rt.accuracy, None
        pred = self.work.predict(p.model, "random", rt.payload.max_steps, p.eval_every)
        rt.work_steps = max(1.0, pred.steps)
        rt.work_info = {"predicted_steps": pred.steps, "prediction": pred.source, "after": "fallback"}
        self._checkpoint(rt)
        self._save(
            rt,
            now,
            init=rt.init,
            steps_done=0,
            accuracy=None,
            work_steps=rt.work_steps,
            checkpoint_step=0,
            checkpoint_path=str(self._ckpt_path(rt)),  # a recovery reads the fallback (and the budget left)
        )
        rows = self._rows(rt, res)
        self._emit(
            Event(
                now,
                "fallback",
                rt.job_id,
                worker,
                data={
                    "from": was,
                    "step": spent,
                    "accuracy": acc,
                    "threshold": lag_threshold(p.target_accuracy, rows, p.bank_fallback_rows),  # type: ignore[arg-type]
                    "rows": rows,
                    "steps_left": rt.payload.max_steps,
                },
            )
        )
        self._need_decide = True

    def _mark_running(self, rt: JobRT, now: float) -> None:
        """A job with a ready replica runs: it trains, or first selects its initial prompt."""
        if rt.admitted and rt.phase in (JobPhase.QUEUED, JobPhase.RUNNING, JobPhase.SELECTING):
            self._set_phase(rt, JobPhase.RUNNING if rt.selected else JobPhase.SELECTING, now)

    def _take_start(
        self, rt: JobRT, res: dict[str, Any], now: float, worker: str | None, **extra: Any
    ) -> None:
        """The job's start came back (``bank.warm_start`` on a worker): it goes on from that state (the
        race's winner has run its race steps: they are the job's first steps), and a ``warm_start`` event
        names the chosen start, the candidates and the race steps of the losers.  The start was evaluated
        on the job's validation rows (``start_accuracy``, the job's first evaluation, as
        ``PromptTrainer.train_to_target`` makes it): at or above the target, the job is done there and is
        exported without a training step."""
        acc = res.get("start_accuracy")
        if res.get("state") is not None:
            rt.state = res["state"]
            rt.version += 1
            rt.steps_done = int(res.get("steps_done") or 0)
            rt.accuracy = None if acc is None else float(acc)  # of this start (none: not evaluated yet)
            rt.target_reached = target_reached(rt.payload.target_accuracy, rt.accuracy) is True
        rt.init = str(res.get("init", "random"))
        rt.race_steps = int(res.get("race_steps") or 0)
        rt.selected = True
        self._checkpoint(rt)
        if res.get("state") is not None:
            self._save(rt, now, accuracy=rt.accuracy)
        data = {k: v for k, v in res.items() if k not in ("state", "elapsed", "at")}
        data.update(extra)
        self._emit(Event(now, "warm_start", rt.job_id, worker, data=data))

    def _note_start(self, rt: JobRT, res: dict[str, Any], now: float) -> None:
        """The job's quote (what it was admitted with) gains the start it got and the prediction since."""
        start = {k: res.get(k) for k in START_KEYS if res.get(k) is not None}
        with self.store.session() as s:
            row = s.get(Job, rt.job_id)
            if row is not None and row.quote is not None:
                row.quote = {**row.quote, "start": start, "after_start": dict(rt.work_info)}
                row.updated_at = now

    def _selected_work(self, rt: JobRT, res: dict[str, Any]) -> dict[str, Any]:
        """A job's selection came back: it plans with the bank's prediction, or, without one (no bank, or
        the job's own init won), with the population prediction of a random start; no selection is left."""
        p = rt.payload
        predicted = res.get("predicted_steps")
        if rt.target_reached:  # done at its start (``_take_start``): no training step is left
            rt.work_info = {"predicted_steps": 0.0, "prediction": "start at its target", "selection_s": 0.0}
            rt.work_steps = float(rt.steps_done + 1)
            self._need_decide = True
            return {"work_steps": rt.work_steps}
        if isinstance(predicted, int | float) and predicted > 0 and res.get("state") is not None:
            steps = self.work.fit(float(predicted), p.max_steps, p.eval_every)
            rt.work_info = {"predicted_steps": steps, "prediction": "prompt bank", "selection_s": 0.0}
        else:
            pred = self.work.predict(p.model, "random", p.max_steps, p.eval_every)
            steps = pred.steps
            rt.work_info = {"predicted_steps": steps, "prediction": pred.source, "selection_s": 0.0}
        rt.work_steps = max(steps, float(rt.steps_done + 1))
        self._need_decide = True
        return {"work_steps": rt.work_steps}

    def _send(self, w: WorkerRec, rt: JobRT | None, op: str, args: dict[str, Any], now: float) -> None:
        w.op, w.op_job, w.op_started = op, (rt.job_id if rt else None), now
        busy = [x for x in self.workers.values() if x.op is not None]
        w.peak_busy = 0
        for x in busy:  # every request in flight has run with at least this many workers busy
            x.peak_busy = max(x.peak_busy, len(busy))
        if rt is not None:
            rt.inflight.add(w.worker_id)
        self.backend.send(w.worker_id, op, args)

    def switch(self, sw: Switch) -> None:
        """The applier's switch: the idle worker unloads its model and loads ``sw.model``; it is loading
        (provisioning) until it replies.  Sent now, or when its request in flight (a prediction or a
        quote's selection) returns."""
        now = self._now
        w = self.workers[sw.worker_id]
        w.switch_from, w.model = w.model, sw.model
        w.ready_at, w.idle_since, w.load_from = None, None, now
        self._emit(Event(now, "switch", sw.job_id, w.worker_id, data={"from": w.switch_from, "to": sw.model}))
        rt = self.jobs.get(sw.job_id) if sw.job_id is not None else None
        if rt is not None:
            before = list(rt.workers)
            w.job_id = rt.job_id
            rt.workers.append(w.worker_id)
            data = {"workers": list(rt.workers), "previous": before, "switched": [w.worker_id]}
            self._emit(Event(now, "allocate", rt.job_id, data=data))
        if w.op is None:
            self._send(w, None, "switch", {"model": sw.model}, now)
        else:
            w.switch_pending = True

    def _dispatch(self, now: float) -> None:
        for w in self.workers.values():
            if w.switch_pending and w.op is None:
                w.switch_pending, w.load_from = False, now
                self._send(w, None, "switch", {"model": w.model}, now)
        # predictions first: they are short and a user is waiting
        pending: deque[tuple[str, dict[str, Any], Future[Any]]] = deque()
        while self.requests:
            model, args, fut = self.requests.popleft()
            if fut.done():
                continue
            free = [
                w
                for w in self.workers.values()
                if w.model == model and w.ready_at is not None and w.op is None and not w.releasing
            ]
            free.sort(key=lambda w: w.job_id is not None)
            if not free:
                if not any(w.model == model for w in self.workers.values()):
                    fut.set_exception(LookupError(f"no worker holds model {model!r}"))
                else:
                    pending.append((model, args, fut))
                continue
            w = free[0]
            w.op_future = fut
            op = str(args.get("op", "predict"))  # a prediction, or a selection for a quote
            self._send(w, None, op, {k: v for k, v in args.items() if k != "op"}, now)
        self.requests = pending

        for rt in list(self.jobs.values()):
            if not rt.admitted or rt.inflight or not rt.workers:
                continue
            ready = [
                self.workers[wid]
                for wid in rt.workers
                if self.workers[wid].ready_at is not None and self.workers[wid].op is None
            ]
            if not ready:
                continue
            if rt.started_at is None:
                rt.started_at = now
                self._save(rt, now, started_at=now)
                self._emit(Event(now, "start", rt.job_id, data={"workers": rt.workers}))
            base = {"job": rt.payload, "state": rt.state, "version": rt.version}
            if rt.done:
                path = self.store.home / "prompts" / f"{rt.job_id}.safetensors"
                self._send(ready[0], rt, "export", {**base, "path": str(path)}, now)
                continue
            if not rt.selected:
                self._set_phase(rt, JobPhase.SELECTING, now)
                self._send(ready[0], rt, "select", {"job": rt.payload}, now)
                continue
            self._set_phase(rt, JobPhase.RUNNING, now)
            if len(ready) == 1 or rt.payload.batch_size < 2:
                steps = self._unit_steps(rt)
                self._send(ready[0], rt, "train", {**base, "steps": steps, "budget_s": self.cfg.chunk_s}, now)
            else:
                n = min(len(ready), rt.payload.batch_size)
                rnd = Round(next(self._next_round), rt.version, [w.worker_id for w in ready[:n]], started=now)
                rt.round = rnd
                for i, w in enumerate(ready[:n]):
                    self._send(w, rt, "grad", {**base, "index": i, "count": n}, now)
