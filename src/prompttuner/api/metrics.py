"""Prometheus metrics, computed at scrape time from the stored events and the controller's pool.

Counting stored events (rather than keeping counters in memory) means a restarted service reports the
same totals, and the numbers always agree with what ``/v1/jobs/{id}/events`` shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select

from prompttuner.state.models import EventRow, Job

if TYPE_CHECKING:
    from prompttuner.service import Service


class _ServiceCollector:
    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        store = self.service.store
        with store.session() as s:
            by_kind = s.execute(select(EventRow.kind, func.count()).group_by(EventRow.kind)).all()
            by_phase = s.execute(select(Job.phase, func.count()).group_by(Job.phase)).all()
            met = s.execute(
                select(Job.deadline_met, func.count())
                .where(Job.deadline_met.is_not(None))
                .group_by(Job.deadline_met)
            ).all()
            job_gpu_s = s.scalar(select(func.coalesce(func.sum(Job.gpu_seconds), 0.0)))
            slo: dict[tuple[str, str], int] = {}
            for row in s.scalars(select(Job).where(Job.phase.in_(("succeeded", "failed", "declined")))):
                judged = row.slo()
                if judged is not None:
                    key = (row.model, "met" if judged.slo_met else "missed")
                    slo[key] = slo.get(key, 0) + 1
        ev = CounterMetricFamily(
            "prompttuner_events", "Stored job and worker events by kind", labels=["kind"]
        )
        for kind, n in by_kind:
            ev.add_metric([kind], n)
        yield ev
        ph = GaugeMetricFamily("prompttuner_jobs", "Jobs by phase", labels=["phase"])
        for phase, n in by_phase:
            ph.add_metric([phase], n)
        yield ph
        dl = CounterMetricFamily(
            "prompttuner_deadlines", "Ended jobs by deadline outcome", labels=["outcome"]
        )
        for flag, n in met:
            dl.add_metric(["met" if flag else "missed"], n)
        yield dl
        sm = CounterMetricFamily(
            "prompttuner_slo",
            "Ended jobs by SLO outcome (target reached by the deadline) and base LLM",
            labels=["model", "outcome"],
        )
        for (model, result), n in sorted(slo.items()):
            sm.add_metric([model, result], n)
        yield sm
        info: dict[str, Any] = self.service.controller.cluster()
        ws = GaugeMetricFamily("prompttuner_workers", "Workers by state and model", labels=["state", "model"])
        counts: dict[tuple[str, str], int] = {}
        for w in info["workers"]:
            key = (w["state"], w["model"])
            counts[key] = counts.get(key, 0) + 1
        for (state, model), n in counts.items():
            ws.add_metric([state, model], n)
        yield ws
        yield CounterMetricFamily(
            "prompttuner_gpu_seconds_held",
            "GPU-seconds held by workers (this run)",
            value=info["gpu_seconds_held"],
        )
        yield CounterMetricFamily(
            "prompttuner_gpu_seconds_busy",
            "GPU-seconds workers spent on requests",
            value=info["gpu_seconds_busy"],
        )
        yield CounterMetricFamily(
            "prompttuner_job_gpu_seconds",
            "GPU-seconds charged to jobs (all time)",
            value=float(job_gpu_s or 0.0),
        )
        yield GaugeMetricFamily("prompttuner_utilisation", "Busy / held GPU time", value=info["utilisation"])


def render_metrics(service: Service) -> tuple[bytes, str]:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_ServiceCollector(service))  # type: ignore[arg-type]
    return generate_latest(reg), CONTENT_TYPE_LATEST
