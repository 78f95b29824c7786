"""The web dashboard (``/dashboard``): its JSON endpoints, and the page itself in a real headless Chromium.

The service runs in process under uvicorn on 127.0.0.1 and a free port, in a thread, with the fake engine
(warm starts from the Prompt Bank's best entry, see :class:`BankFakeEngine`).  The browser is Debian's
``chromium`` and ``chromium-driver`` (``scripts/browser.sh install``; ``scripts/test.sh`` runs it), driven
by Selenium offline (``SE_OFFLINE=true``, the binary and the driver given explicitly: nothing downloads
a browser) with ``--headless=new --no-sandbox``; every request it makes goes to 127.0.0.1 (other hosts
through a proxy address nothing listens on).  Where the browser cannot be had the browser tests are
skipped, loudly; with ``CI=true`` they fail.  Waits are bounded ``WebDriverWait``s on the DOM.

``PROMPTTUNER_DASHBOARD_SCREENSHOT=docs/dashboard.png`` also saves a screenshot of the page (tenant view,
the job with a learning curve selected) there.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from prompttuner.api.app import create_app
from prompttuner.api.routers.dashboard import replay_pool
from prompttuner.runtime.controller import ControllerConfig
from prompttuner.runtime.engine import JobPayload, WarmStartUnavailable
from prompttuner.service import Service, ServiceConfig
from prompttuner.state.models import EventRow
from service_fakes import FakeEngine, GreedyPolicy
from test_api_service import ROWS, wait_for

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOT = os.environ.get("PROMPTTUNER_DASHBOARD_SCREENSHOT")
WAIT_S = 20  # the longest any one wait on the page may take
POLL_MS = 400  # the page's polling interval in these tests (?every=)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


class BankFakeEngine(FakeEngine):
    """The fake engine, warm-starting from the best entry of the bank the tenant may use (public ones and
    its own), named as the real engine names it: ``bank:<entry id>``.  It reads the bank's table with
    sqlite3 rather than through ``prompttuner.bank``, whose imports (torch) would cost a worker seconds."""

    def warm_start(self, loaded: Any, job: JobPayload) -> dict[str, Any]:
        import sqlite3

        out = super().warm_start(loaded, job)
        db = Path(str(job.bank_dir)) / "bank.sqlite"
        if not db.exists():
            raise WarmStartUnavailable("the Prompt Bank is empty")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            best = con.execute(
                "SELECT id, task_name, accuracy FROM bank_entries WHERE model = ? AND owner IN ('public', ?)"
                " ORDER BY accuracy DESC LIMIT 1",
                (job.model, job.tenant),
            ).fetchone()
        if best is None:
            raise WarmStartUnavailable("no entry for this model")
        out.update(init=f"bank:{best[0]}", entry_task=best[1], probe_accuracy=best[2])
        return out


# -- the service, live on 127.0.0.1 --------------------------------------------------------------------


@dataclass
class Live:
    service: Service
    base: str
    tenant_id: str
    key: str
    other_key: str
    entries: dict[str, str]  # task name -> entry id

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {key or self.key}"}, timeout=10
        )


def _add_entries(service: Service, tenant_id: str) -> dict[str, str]:
    """Two Prompt Bank entries for model 'tiny': a public one and one of the tenant's own (precomputed
    task vectors: no text embedder is loaded)."""
    import torch

    from prompttuner.bank import PUBLIC, PromptBank
    from prompttuner.bank.features import TASK_DIM

    rng = np.random.default_rng(0)
    out = {}
    with PromptBank(str(service.controller.cfg.bank_dir)) as b:
        for task, owner, acc in (("sst2", PUBLIC, 0.86), ("reviews", tenant_id, 0.91)):
            out[task] = b.add(
                torch.tensor(rng.normal(size=(8, 16)), dtype=torch.float32),
                model="tiny",
                task_description=f"{task}: classify as bad, good",
                labels=["bad", "good"],
                accuracy=acc,
                steps=40,
                owner=owner,
                task_name=task,
                features={"task_vec": rng.normal(size=TASK_DIM)},
            )
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    import uvicorn

    old_step = os.environ.get("FAKE_STEP_S")
    os.environ["FAKE_STEP_S"] = "0.05"  # the workers (spawned at start) take 50 ms a step
    ccfg = ControllerConfig(tick_s=0.05, decide_every_s=0.2, chunk_s=0.3)
    cfg = ServiceConfig(
        home=tmp_path_factory.mktemp("dash") / "home",
        engine="test_dashboard:BankFakeEngine",
        controller=ccfg,
        models=("tiny",),
        workers=2,
        warm=2,
    )
    service = Service(cfg, policy=GreedyPolicy())
    tenant, key = service.store.create_tenant("acme")
    _, other_key = service.store.create_tenant("globex")
    entries = _add_entries(service, tenant.id)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=60)
        assert server.started, "uvicorn did not start"
        yield Live(service, f"http://127.0.0.1:{port}", tenant.id, key, other_key, entries)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
        if old_step is None:
            os.environ.pop("FAKE_STEP_S", None)
        else:
            os.environ["FAKE_STEP_S"] = old_step


def submit(live: Live, **over: Any) -> str:
    body: dict[str, Any] = {
        "model": "tiny",
        "training_data": ROWS,
        "labels": ["bad", "good"],
        "max_steps": 40,
        "duration_s": 600,
        "hyperparameters": {"batch_size": 4, "eval_every": 4},
        **over,
    }
    with live.client() as c:
        r = c.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def job(live: Live, job_id: str) -> dict[str, Any]:
    with live.client() as c:
        return c.get(f"/v1/jobs/{job_id}").json()  # type: ignore[no-any-return]


def wait_ended(live: Live, job_id: str) -> dict[str, Any]:
    ended = ("succeeded", "failed", "cancelled", "declined")
    return wait_for(lambda: (j := job(live, job_id))["status"] in ended and j, timeout=60)  # type: ignore[no-any-return]


# -- the JSON endpoints (no browser needed) -------------------------------------------------------------


def _ev(
    i: int, kind: str, t: float, job: str | None = None, worker: str | None = None, **data: Any
) -> EventRow:
    return EventRow(id=i, time=t, kind=kind, job_id=job, worker_id=worker, data=data)


def test_replay_pool_counts_provisioning_warm_busy_and_restarts() -> None:
    rows = [
        _ev(1, "provision", 10, worker="wa-1", model="m"),
        _ev(2, "provision", 10, worker="wa-2", model="m"),
        _ev(3, "worker_ready", 12, worker="wa-1"),
        _ev(4, "allocate", 13, job="j1", workers=["wa-1", "wa-2"]),
        _ev(5, "worker_ready", 14, worker="wa-2"),
        _ev(6, "fail", 15, job="j1", worker="wa-2", worker_lost=True),  # a lost replica: j1 goes on
        _ev(7, "worker_fail", 15, worker="wa-2", error="boom"),
        _ev(8, "finish", 16, job="j1"),
        _ev(9, "release", 17, worker="wa-1"),
        _ev(10, "provision", 30, worker="wa-3", model="m"),
        _ev(11, "provision", 40, worker="wb-1", model="m"),  # the service started again: wa-3 went with it
    ]
    points, workers = replay_pool(rows, start=0, now=50)
    got = [(p["t"], p["provisioning"], p["warm"], p["busy"]) for p in points]
    assert got == [
        (10, 2, 0, 0),
        (12, 1, 1, 0),
        (13, 1, 1, 1),
        (14, 0, 2, 2),
        (15, 0, 1, 1),
        (16, 0, 1, 0),
        (17, 0, 0, 0),
        (30, 1, 0, 0),
        (40, 1, 0, 0),
        (50, 1, 0, 0),
    ]
    ends = {w["id"]: (w["end"], w.get("error")) for w in workers}
    assert ends == {
        "wa-1": ("release", None),
        "wa-2": ("fail", "boom"),
        "wa-3": ("restart", None),
        "wb-1": (None, None),
    }
    # a window that opens later starts from the state then, and lists the workers alive in it
    points, workers = replay_pool(rows, start=14.5, now=50)
    assert (points[0]["t"], points[0]["warm"], points[0]["busy"]) == (14.5, 2, 2)
    assert {w["id"] for w in workers} == {"wa-1", "wa-2", "wa-3", "wb-1"}
    points, workers = replay_pool(rows, start=35, now=50)
    assert [(p["t"], p["provisioning"]) for p in points] == [(35, 1), (40, 1), (50, 1)]
    assert {w["id"] for w in workers} == {"wa-3", "wb-1"}


def test_dashboard_endpoints_and_who_may_read_them(live: Live) -> None:
    jid = submit(live, max_steps=8)
    wait_ended(live, jid)
    with httpx.Client(base_url=live.base, timeout=10) as anon:
        page = anon.get("/dashboard")  # the page loads without a key; its data does not
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "no-referrer"
        for src in ("/dashboard/static/dashboard.js", "/dashboard/static/uPlot.iife.min.js"):
            assert src in page.text
            assert anon.get(src).status_code == 200
        assert anon.get("/dashboard/static/uPlot.LICENSE").text.startswith("The MIT License")
        assert anon.get("/dashboard/static/dashboard.html").status_code == 404  # only the listed files
        assert anon.get("/dashboard/static/..%2Fapp.py").status_code == 404
        assert anon.get("/v1/dashboard/pool").status_code == 401
    with live.client() as c:
        pool = c.get("/v1/dashboard/pool").json()
        assert pool["viewer"] == {"role": "tenant", "tenant": "acme"}
        assert pool["series"][-1]["warm"] == 2 and len(pool["workers"]) >= 2
        assert pool["gpu_seconds_charged"] > 0
        assert all("error" not in w for w in pool["workers"])
        for path in (
            "/v1/admin/dashboard/jobs",
            f"/v1/admin/dashboard/jobs/{jid}/events",
            "/v1/admin/dashboard/bank",
        ):
            assert c.get(path).status_code == 403, path
        assert c.get("/v1/dashboard/pool", params={"since_s": 5}).status_code == 422
    with live.client(live.other_key) as c:
        assert c.get("/v1/dashboard/pool").json()["gpu_seconds_charged"] == 0  # globex has no jobs
    with live.client(str(live.service.admin_key)) as admin:
        pool = admin.get("/v1/dashboard/pool").json()
        assert pool["viewer"] == {"role": "admin", "tenant": None}
        jobs = admin.get("/v1/admin/dashboard/jobs").json()["data"]
        assert {"id": jid, "tenant": "acme"} in [{"id": j["id"], "tenant": j["tenant"]} for j in jobs]
        kinds = [e["kind"] for e in admin.get(f"/v1/admin/dashboard/jobs/{jid}/events").json()["data"]]
        assert kinds[0] == "arrive" and "finish" in kinds
        assert admin.get("/v1/admin/dashboard/jobs/job-nope/events").status_code == 404
        bank = {e["task"]: e for e in admin.get("/v1/admin/dashboard/bank").json()["data"]}
        assert bank["sst2"]["owner"] == "public" and bank["reviews"]["owner"] == "acme"


# -- the page in a headless Chromium --------------------------------------------------------------------


def _browser_missing() -> str | None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.exists() and os.access(p, os.X_OK))]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return None
    what = ", ".join(missing)
    return f"no headless browser for the dashboard test: {what} missing (bash scripts/browser.sh install)"


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    why = _browser_missing()
    if why is not None:
        if in_ci():
            pytest.fail(f"CI needs the dashboard's browser test: {why}")
        warnings.warn(why, stacklevel=1)
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch a browser or a driver
    profile = tmp_path_factory.mktemp("chromium-profile")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        # anything not on loopback goes to a proxy nothing listens on: no traffic leaves 127.0.0.1
        "--proxy-server=http://127.0.0.1:9",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = ChromeService(executable_path=str(CHROMEDRIVER), log_output=os.devnull)
    drv = webdriver.Chrome(options=opts, service=service)
    drv.set_page_load_timeout(WAIT_S)
    drv.set_script_timeout(WAIT_S)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(drv: Any) -> list[str]:
    return [
        f"{e.get('source')}: {e.get('message')}" for e in drv.get_log("browser") if e.get("level") == "SEVERE"
    ]


def until(drv: Any, what: str, cond: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, WAIT_S, poll_frequency=0.1).until(cond, message=f"the page did not show {what}")


# The page redraws its tables at every poll, so an element found now may be gone a moment later: the
# helpers below read and click in one script each, on what the page shows at that instant.
def attr(drv: Any, css: str, name: str) -> str | None:
    script = "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null"
    return drv.execute_script(script, css, name)  # type: ignore[no-any-return]


def text(drv: Any, css: str) -> str:
    script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''"
    return drv.execute_script(script, css)  # type: ignore[no-any-return]


def count(drv: Any, css: str) -> int:
    return int(drv.execute_script("return document.querySelectorAll(arguments[0]).length", css))


def kinds(drv: Any, css: str) -> set[str]:
    script = "return [...document.querySelectorAll(arguments[0])].map((e) => e.dataset.kind)"
    return set(drv.execute_script(script, css))


def click(drv: Any, css: str) -> None:
    assert drv.execute_script(
        "const e = document.querySelector(arguments[0]); if (e) e.click(); return !!e", css
    )


def row_attr(drv: Any, job_id: str, name: str) -> str | None:
    return attr(drv, f'#jobs tbody tr[data-job="{job_id}"]', name)


def polls(drv: Any) -> int:
    return int(attr(drv, "#updated", "data-polls") or 0)


def test_page_without_a_key_asks_for_one(driver: Any, live: Live) -> None:
    driver.get(live.base + "/dashboard")
    driver.execute_script("sessionStorage.clear()")
    driver.get(live.base + "/dashboard")
    until(driver, "that it needs a key", lambda d: attr(d, "body", "data-state") == "nokey")
    assert text(driver, "#viewer") == "no key"
    assert "Give it an API key" in text(driver, "#intro")
    assert console_errors(driver) == []


def test_dashboard_shows_jobs_and_follows_them(driver: Any, live: Live) -> None:
    t0 = time.monotonic()
    warm = submit(live, bank_warm_start=True, target_accuracy=0.8, max_steps=60)  # reaches 0.8 at step 25
    missed = submit(live, target_accuracy=0.99, max_steps=20)  # stops below its target: SLO missed
    wait_ended(live, warm)
    wait_ended(live, missed)
    warm_row, missed_row = f'#jobs tr[data-job="{warm}"]', f'#jobs tr[data-job="{missed}"]'

    driver.get(f"{live.base}/dashboard?key={live.key}&every={POLL_MS}")
    until(driver, "the tenant's jobs", lambda d: row_attr(d, warm, "data-status") == "succeeded")
    assert "key=" not in driver.current_url  # out of the address bar, into this tab's session storage
    assert driver.execute_script("return sessionStorage.getItem('prompttuner.dashboard.key')") == live.key
    assert text(driver, "#viewer") == "tenant acme"
    until(driver, "the missed SLO", lambda d: "SLO missed" in text(d, missed_row))
    assert "SLO met" in text(driver, warm_row) and "target ✗" in text(driver, missed_row)

    # the job's view: its learning curve against the target, its events on a timeline
    click(driver, warm_row)
    until(driver, "the job's learning curve", lambda d: attr(d, "#curve-chart", "data-job") == warm)
    until(driver, "the curve's points", lambda d: int(attr(d, "#curve-chart", "data-points") or 0) >= 5)
    assert count(driver, "#curve-chart canvas") == 1
    legend = text(driver, "#curve-chart")
    assert "accuracy" in legend and "loss" in legend and "target" in legend
    marks = kinds(driver, "#timeline .mark")
    lifecycle = {"arrive", "quote", "admit", "allocate", "start", "warm_start", "progress", "finish"}
    assert lifecycle <= marks, marks
    assert count(driver, "#timeline .vlabel.deadline") == 1 and count(driver, "#timeline .vline.quote") == 1
    events = text(driver, "#events")
    assert f"started from Prompt Bank entry {live.entries['reviews']}" in events  # acme's best entry
    assert "admitted" in events and "checkpointed at step" in events and "steps predicted" in events
    facts = text(driver, "#job-facts")
    assert "quoted finish:" in facts and "deadline:" in facts and "GPU-s charged:" in facts

    # the Prompt Bank (the public entry and acme's own) and which job started from which
    until(driver, "the Prompt Bank", lambda d: count(d, "#bank tbody tr") == 2)
    assert warm[:12] in text(driver, f'#bank tr[data-entry="{live.entries["reviews"]}"]')
    assert warm in text(driver, "#warm-starts")
    # the pool over time: provisioning, then two warm workers; GPU-seconds held, busy and charged
    assert int(attr(driver, "#pool-chart", "data-points") or 0) >= 2
    assert count(driver, "#pool-chart canvas") == 1
    assert count(driver, "#workers tbody tr") >= 2
    gpu = text(driver, "#gpu")
    assert "GPU-s held" in gpu and "GPU-s charged (your jobs)" in gpu
    # which worker holds which base LLM, and the warm workers per model
    held = driver.execute_script(
        "return [...document.querySelectorAll('#workers tbody tr')].map((r) => r.dataset.model)"
    )
    assert held and set(held) == {"tiny"}, held
    assert "tiny 2" in gpu and "warm by model" in gpu

    # a job submitted while the page is open shows up, and the page follows it to its end
    before = polls(driver)
    late = submit(live, max_steps=60)
    until(driver, "the new job", lambda d: row_attr(d, late, "data-status") is not None)
    seen = {(row_attr(driver, late, "data-status"), row_attr(driver, late, "data-steps"))}

    def ended(d: Any) -> bool:
        seen.add((row_attr(d, late, "data-status"), row_attr(d, late, "data-steps")))
        return row_attr(d, late, "data-status") == "succeeded"

    until(driver, "the new job's end", ended)
    assert row_attr(driver, late, "data-steps") == "60"
    assert len(seen) >= 2, seen  # it was shown before its end, and then changed
    assert polls(driver) > before
    errors = console_errors(driver)
    assert errors == [], errors

    if SCREENSHOT:
        _screenshot(live, driver, warm)

    # the operator's view: the admin key, given in the form, shows every tenant's jobs and entries
    driver.find_element("id", "key-input").send_keys(str(live.service.admin_key))
    click(driver, "#key-form button[type=submit]")
    until(driver, "the operator's view", lambda d: text(d, "#viewer") == "operator (admin key)")
    until(driver, "every tenant's jobs", lambda d: "acme" in text(d, warm_row))
    until(driver, "every entry's owner", lambda d: "acme" in text(d, "#bank"))
    assert driver.execute_script("return sessionStorage.getItem('prompttuner.dashboard.key')") == str(
        live.service.admin_key
    )
    errors = console_errors(driver)
    assert errors == [], errors
    assert time.monotonic() - t0 < 60


def _screenshot(live: Live, drv: Any, selected: str) -> None:
    """The page with a job still running beside the finished ones, the learning curve of ``selected``."""
    running = submit(live, max_steps=5000, best_effort=True, duration_s=300)
    until(drv, "the running job", lambda d: int(row_attr(d, running, "data-steps") or 0) > 0)
    click(drv, f'#jobs tr[data-job="{selected}"]')
    until(drv, "the selected job", lambda d: attr(d, "#curve-chart", "data-job") == selected)
    before = polls(drv)
    until(drv, "one more poll", lambda d: polls(d) > before)
    # the whole page, beyond the window's height (Chromium's own capture, through the DevTools protocol)
    size = drv.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000), "scale": 1}
    shot = drv.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    Path(str(SCREENSHOT)).parent.mkdir(parents=True, exist_ok=True)
    Path(str(SCREENSHOT)).write_bytes(base64.b64decode(shot["data"]))
    with live.client() as c:
        c.post(f"/v1/jobs/{running}/cancel")


def test_dashboard_shows_which_worker_holds_which_model(
    driver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two base LLMs in one service: the worker table names each worker's model, and the worker that
    switched from one model to the other says so; the cards give the warm workers per model."""
    import uvicorn

    from service_fakes import SwitcherPolicy

    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    ccfg = ControllerConfig(tick_s=0.05, decide_every_s=0.2, chunk_s=0.3, min_warm={"tiny": 0, "tiny2": 0})
    cfg = ServiceConfig(
        home=tmp_path / "home", engine="service_fakes:FakeEngine", controller=ccfg, models=("tiny", "tiny2")
    )
    service = Service(cfg, policy=SwitcherPolicy(prewarm={"tiny": 2}))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=60)
        key = str(service.default_key)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
            wait_for(lambda: c.get("/v1/cluster").json()["warm_models"].get("tiny") == 2)
            body: dict[str, Any] = {
                "training_data": ROWS,
                "labels": ["bad", "good"],
                "duration_s": 600,
                "hyperparameters": {"batch_size": 4, "eval_every": 4},
            }
            long = c.post("/v1/jobs", json={**body, "model": "tiny", "max_steps": 2000}).json()["id"]
            wait_for(lambda: c.get(f"/v1/jobs/{long}").json()["progress"]["steps_done"] > 0)
            other = c.post("/v1/jobs", json={**body, "model": "tiny2", "max_steps": 8}).json()["id"]
            wait_for(lambda: c.get(f"/v1/jobs/{other}").json()["status"] == "succeeded", timeout=60)
            switched = next(
                e["worker"] for e in c.get(f"/v1/jobs/{other}/events").json()["data"] if e["kind"] == "switch"
            )
            driver.get(f"{base}/dashboard?key={key}&every={POLL_MS}")
            row = f'#workers tr[data-worker="{switched}"]'
            until(driver, "the switched worker's model", lambda d: attr(d, row, "data-model") == "tiny2")
            assert "tiny2 (was tiny)" in text(driver, row)
            held = driver.execute_script(
                "return [...document.querySelectorAll('#workers tbody tr')].map((r) => r.dataset.model)"
            )
            assert sorted(held) == ["tiny", "tiny2"], held
            until(driver, "the warm workers per model", lambda d: "tiny 1, tiny2 1" in text(d, "#gpu"))
            errors = console_errors(driver)
            assert errors == [], errors
            c.post(f"/v1/jobs/{long}/cancel")
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
