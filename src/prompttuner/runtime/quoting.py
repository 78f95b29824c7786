"""What the controller does for a job before it is submitted: the work it is quoted with, and the Prompt
Bank's selection run at a quote (on a warm worker of its model) and kept for the job that follows."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

from prompttuner.core.slo import target_reached
from prompttuner.runtime.dispatch import START_KEYS, Dispatch
from prompttuner.runtime.records import JobRT


class Quoting(Dispatch):
    selections: dict[str, dict[str, Any]]  # selections run for quotes, by request key
    _wake: threading.Event

    def plan_work(
        self,
        model: str,
        warm_start: bool,
        max_steps: int,
        eval_every: int,
        selection: dict[str, Any] | None = None,
        target: float | None = None,
    ) -> tuple[float, dict[str, Any]]:
        """The steps a new job is admitted and quoted with, and how they were predicted.

        With a selection already made (at a quote): the bank's prediction, nothing left to select.  A bank
        job without one: the population prediction of a bank start plus the selection still to run, in
        steps (its measured time over the planned step time).  Otherwise the population prediction of a
        random start.  ``max_steps`` only caps it.  A selected start already at ``target`` on the job's
        validation rows (``start_accuracy``) is done at its start: one step past it is planned, as the
        dispatcher plans it (no training runs; the export remains)."""
        start = {k: selection.get(k) for k in START_KEYS if selection.get(k) is not None} if selection else {}
        at = selection.get("start_accuracy") if selection is not None else None
        if selection is not None and selection.get("state") is not None and target_reached(target, at):
            done = {"predicted_steps": 0.0, "prediction": "start at its target", "selection_s": 0.0}
            return float(int(selection.get("steps_done") or 0) + 1), {**done, "start": start}
        if selection is not None and selection.get("state") is not None:
            raw = float(selection.get("predicted_steps") or 0.0)
            if raw > 0:
                steps = self.work.fit(raw, max_steps, eval_every)
                bank = {"predicted_steps": steps, "prediction": "prompt bank", "selection_s": 0.0}
                return steps, {**bank, "start": start}
        kind = self.work.kind(warm_start and selection is None)
        pred = self.work.predict(model, kind, max_steps, eval_every)
        info: dict[str, Any] = {"predicted_steps": pred.steps, "prediction": pred.source, "selection_s": 0.0}
        if start:
            info["start"] = start
        work = pred.steps
        if kind == "bank" and self.cfg.bank_dir is not None:
            sel_s = self.profiles.planning_select_s(model)
            work += sel_s / max(1e-9, self.profiles.planning_step_s(model))
            info["selection_s"] = round(sel_s, 3)
        return work, info

    def preselect(self, key: str, args: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Run the Prompt Bank's selection for a job not yet submitted (a quote with the bank), on a warm
        worker of its model, and keep it under ``key`` for the job that follows (``selection_ttl_s``)."""
        with self.lock:
            self._drop_stale_selections()
            hit = self.selections.get(key)
            if hit is not None:
                return hit
            job = args["job"]
            if not any(w.model == job.model for w in self.workers.values()):
                raise LookupError(f"no worker holds model {job.model!r}")
            fut: Future[Any] = Future()
            self.requests.append((job.model, {"op": "select", "job": job}, fut))
        self._wake.set()
        res = dict(fut.result(timeout=timeout or self.cfg.predict_timeout_s))
        res["at"] = self.clock()
        with self.lock:
            self.selections[key] = res
        return res

    def take_selection(self, key: str) -> dict[str, Any] | None:
        """The selection made for ``key`` at a quote (once: the job that uses it takes it)."""
        with self.lock:
            self._drop_stale_selections()
            return self.selections.pop(key, None)

    def _drop_stale_selections(self) -> None:
        now = self.clock()
        for k in [k for k, v in self.selections.items() if now - v["at"] > self.cfg.selection_ttl_s]:
            self.selections.pop(k)

    def _take_selection(self, rt: JobRT, res: dict[str, Any]) -> None:
        now = self.clock()
        rt.gpu_seconds += float(res.get("elapsed", 0.0))  # the probes and the race ran for this job
        sel_s = round(float(res.get("elapsed", 0.0)), 3)
        self._take_start(rt, res, now, None, at_quote=True, selection_s=sel_s)
        self._save(rt, now, init=rt.init, gpu_seconds=rt.gpu_seconds, steps_done=rt.steps_done)
