"""The assembled service: store, backend, policy and controller, under one ``$PROMPTTUNER_HOME``.

``Service`` is what ``prompttuner serve``, the demo and the tests start.  It owns the default tenant: on
first start it creates one and writes its API key to ``$PROMPTTUNER_HOME/api_key`` (mode 600) so that
``prompttuner submit`` and ``status`` on the same machine work without configuration.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from prompttuner import config
from prompttuner.core.types import Event
from prompttuner.runtime.backend import Backend
from prompttuner.runtime.controller import Controller, ControllerConfig, JobRT
from prompttuner.runtime.engine import REAL_ENGINE
from prompttuner.scheduler.base import Policy, accepts_switch, make_policy
from prompttuner.service.backends import make_backend
from prompttuner.service.bank import add_prompt
from prompttuner.state.limits import Limits
from prompttuner.state.store import Store, write_private

log = logging.getLogger("prompttuner.service")

DEFAULT_MODEL = "smollm2-135m"


@dataclass
class ServiceConfig:
    home: Path = field(default_factory=config.home)
    db_url: str | None = None
    backend: str = "local"
    backend_options: dict[str, Any] = field(default_factory=dict)
    engine: str = REAL_ENGINE
    policy: str = "prompttuner"
    # the base LLMs served: each has a warm pool; with several, the policy may switch an idle worker from
    # one to another (when the policy takes ``switch``)
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    workers: int = 2  # capacity: most workers held at once
    warm: int | None = None  # workers kept warm, spread over the models in order (default: all of them)
    max_request_bytes: int = 4 << 20
    max_upload_bytes: int = 16 << 20
    max_rows: int = 50_000
    max_steps_limit: int = 10_000
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    limits: Limits = field(default_factory=Limits)  # rate limits and per-tenant quotas
    bank_auto_add: bool | None = (
        None  # add prompts of jobs that met their target (None: with the real engine)
    )


def warm_floors(models: tuple[str, ...], warm: int) -> dict[str, int]:
    """``warm`` workers spread over ``models`` in order (the first ones take the remainder)."""
    names = tuple(dict.fromkeys(models))
    base, extra = divmod(max(0, warm), len(names))
    return {m: base + (1 if i < extra else 0) for i, m in enumerate(names)}


def bundled_models() -> tuple[str, ...]:
    """Models the real engine can load offline (imports the engine: torch and transformers)."""
    from prompttuner.tuning import BUNDLED

    return tuple(BUNDLED)


class Service:
    def __init__(
        self, cfg: ServiceConfig, policy: Policy | None = None, backend: Backend | None = None
    ) -> None:
        self.cfg = cfg
        self.store = Store(cfg.home, cfg.db_url)
        switch = len(cfg.models) > 1 and accepts_switch(cfg.policy)
        self.policy = policy or make_policy(cfg.policy, **({"switch": True} if switch else {}))
        self.backend = backend or make_backend(cfg.backend, engine_spec=cfg.engine, **cfg.backend_options)
        ccfg = cfg.controller
        ccfg.max_workers = cfg.workers
        if not ccfg.min_warm and cfg.models:
            ccfg.min_warm = warm_floors(cfg.models, cfg.warm if cfg.warm is not None else cfg.workers)
        if ccfg.bank_dir is None:
            ccfg.bank_dir = str(cfg.home / "bank")
        self.controller = Controller(self.store, self.backend, self.policy, ccfg, on_finish=self._add_to_bank)
        self.default_key = self._ensure_default_tenant()
        self.admin_key = self.store.ensure_admin_key(cfg.home / "admin_key")  # the operator's (0600)
        # the models jobs may ask for: the configured ones, plus what the real engine bundles
        names = list(cfg.models) + (list(bundled_models()) if cfg.engine == REAL_ENGINE else [])
        self.models: tuple[str, ...] = tuple(dict.fromkeys(names))
        self._started = False
        self._lock_file: IO[str] | None = None
        self._bank_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompttuner-bank")

    def _ensure_default_tenant(self) -> str | None:
        key_file = self.cfg.home / "api_key"
        if self.store.tenant_by_name("default") is not None:
            return key_file.read_text().strip() if key_file.exists() else None
        _tenant, key = self.store.create_tenant("default")
        write_private(key_file, key + "\n")
        return key

    def _add_to_bank(self, rt: JobRT, prompt_path: str) -> None:
        """A job that met its target (or had none) adds its prompt to the bank, privately, off the loop."""
        auto = (
            self.cfg.bank_auto_add if self.cfg.bank_auto_add is not None else self.cfg.engine == REAL_ENGINE
        )
        target = rt.payload.target_accuracy
        if not auto or (target is not None and not rt.target_reached):
            return
        args = {
            "job_id": rt.job_id,
            "tenant": rt.tenant,
            "model": rt.payload.model,
            "prompt_path": prompt_path,
            "labels": list(rt.payload.labels),
            "accuracy": rt.accuracy,
            "steps": rt.steps_done,
            "train_path": rt.payload.train_path,
        }
        self._bank_pool.submit(self._bank_add_job, args)

    def _bank_add_job(self, args: dict[str, Any]) -> None:
        bank_dir = str(self.controller.cfg.bank_dir)
        try:
            entry = add_prompt(bank_dir, **args)
            data: dict[str, Any] = {"added": True, "entry": entry, "public": False}
        except Exception as e:  # noqa: BLE001 - the bank is optional: record why, never fail the job
            data = {"added": False, "error": f"{type(e).__name__}: {e}"}
        self.store.add_events([Event(time.time(), "bank", args["job_id"], data=data)])

    def start(self) -> None:
        if not self._started:
            self._lock_home()
            self.controller.start()
            self._started = True

    def _lock_home(self) -> None:
        """One service per home folder: two controllers would run the same jobs twice."""
        import fcntl

        fd = os.open(self.cfg.home / "service.lock", os.O_RDWR | os.O_CREAT, 0o600)
        f = open(fd, "a+")  # noqa: SIM115 - held for the service's life
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise RuntimeError(
                f"another PromptTuner service (pid {holder}) is running on {self.cfg.home}; "
                "stop it or use another --home"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f

    def stop(self) -> None:
        if self._started:
            self.controller.stop()
            self._started = False
        self._bank_pool.shutdown(wait=True)
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None
        self.store.engine.dispose()
