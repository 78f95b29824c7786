/* PromptTuner dashboard: everything it shows comes from the service's JSON API, with the key the user
 * gives it (kept in sessionStorage).  Plain JavaScript, no build step; charts with the vendored uPlot.
 * It never writes data from the API into HTML: text goes in through textContent only. */
"use strict";

(function () {
  const KEY_STORE = "prompttuner.dashboard.key";
  const TERMINAL = new Set(["succeeded", "failed", "cancelled", "declined"]);
  const END_KINDS = new Set(["finish", "cancel", "decline"]);
  const JOB_LIMIT = 50;
  const EVENT_PAGE = 1000;
  const params = new URLSearchParams(location.search);
  const every = Math.min(60000, Math.max(500, Number(params.get("every")) || 3000));

  const S = {
    key: null,
    viewer: null, // {role, tenant}
    jobs: [],
    events: new Map(), // job id -> {list, last, done, terminalPolls}
    bank: [],
    cluster: null,
    pool: null,
    selected: params.get("job"),
    pinned: Boolean(params.get("job")),
    polls: 0,
    timer: null,
    gen: 0, // bumped when the key changes: answers for an older key are dropped
    charts: { curve: null, curveJob: null, pool: null },
  };

  // -- small helpers ------------------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("data-")) e.setAttribute(k, String(v));
      else if (k === "title") e.title = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const badge = (text, cls) => el("span", { class: "badge " + (cls || ""), text });
  const num = (v, d = 3) => (v === null || v === undefined || !isFinite(v) ? "–" : Number(v).toFixed(d));
  const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");
  const short = (id) => (id && id.length > 14 ? id.slice(0, 12) + "…" : id || "–");
  function clock(t) {
    if (t === null || t === undefined) return "–";
    const d = new Date(t * 1000);
    return d.toLocaleTimeString([], { hour12: false });
  }
  function dur(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    const a = Math.abs(s);
    if (a < 90) return a.toFixed(a < 10 ? 1 : 0) + " s";
    if (a < 5400) return (a / 60).toFixed(1) + " min";
    if (a < 172800) return (a / 3600).toFixed(1) + " h";
    return (a / 86400).toFixed(1) + " d";
  }
  function setRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }
  function cell(content, cls) {
    const td = el("td", { class: cls });
    if (Array.isArray(content)) td.append(...content.filter((c) => c !== null && c !== undefined));
    else if (content instanceof Node) td.append(content);
    else td.textContent = content === null || content === undefined ? "–" : String(content);
    return td;
  }

  // -- the key --------------------------------------------------------------------------------------------
  function takeKeyFromUrl() {
    const k = params.get("key");
    if (k) {
      sessionStorage.setItem(KEY_STORE, k);
      params.delete("key"); // out of the address bar and the history
      const rest = params.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
    }
    S.key = sessionStorage.getItem(KEY_STORE);
  }
  function setKey(k) {
    S.gen += 1;
    S.key = k || null;
    if (S.key) sessionStorage.setItem(KEY_STORE, S.key);
    else sessionStorage.removeItem(KEY_STORE);
    S.viewer = null;
    S.jobs = [];
    S.events = new Map();
    S.bank = [];
    S.cluster = null;
    S.pool = null;
    if (!S.pinned) S.selected = null;
    render();
    schedule(0);
  }

  // -- the API --------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }
  async function api(path) {
    const r = await fetch(path, { headers: { Authorization: "Bearer " + S.key }, cache: "no-store" });
    let body = null;
    try {
      body = await r.json();
    } catch (e) {
      body = null;
    }
    if (!r.ok) {
      const msg = body && body.error ? body.error.message : r.status + " " + r.statusText;
      throw new ApiError(r.status, msg, Number(r.headers.get("Retry-After")) || 0);
    }
    return body;
  }
  const isAdmin = () => S.viewer && S.viewer.role === "admin";
  const paths = {
    jobs: () => (isAdmin() ? "/v1/admin/dashboard/jobs" : "/v1/jobs") + "?limit=" + JOB_LIMIT,
    events: (id, after) =>
      (isAdmin() ? "/v1/admin/dashboard/jobs/" : "/v1/jobs/") +
      encodeURIComponent(id) + "/events?limit=" + EVENT_PAGE + "&after=" + after,
    bank: () => (isAdmin() ? "/v1/admin/dashboard/bank" : "/v1/bank/prompts"),
  };

  async function fetchEvents(job) {
    let ev = S.events.get(job.id);
    if (!ev) {
      ev = { list: [], last: 0, done: false, terminalPolls: 0 };
      S.events.set(job.id, ev);
    }
    if (ev.done) return;
    for (let page = 0; page < 20; page++) {
      const got = (await api(paths.events(job.id, ev.last))).data;
      for (const e of got) ev.list.push(e);
      if (got.length) ev.last = got[got.length - 1].id;
      if (got.length < EVENT_PAGE) break;
    }
    if (TERMINAL.has(job.status)) {
      // the job's last events are written just after its row: stop once its closing event is here
      ev.terminalPolls += 1;
      const closed = ev.list.some((e) => END_KINDS.has(e.kind) || (e.kind === "fail" && !(e.data || {}).worker_lost));
      if (closed || ev.terminalPolls >= 3) ev.done = true;
    }
  }

  async function poll() {
    const gen = S.gen;
    if (!S.key) {
      document.body.dataset.state = "nokey";
      render();
      return;
    }
    try {
      const pool = await api("/v1/dashboard/pool");
      if (gen !== S.gen) return;
      S.pool = pool;
      S.viewer = pool.viewer;
      const [jobs, cluster, bank] = await Promise.all([api(paths.jobs()), api("/v1/cluster"), api(paths.bank())]);
      if (gen !== S.gen) return;
      S.jobs = jobs.data;
      S.cluster = cluster;
      S.bank = bank.data;
      await Promise.all(S.jobs.map(fetchEvents));
      if (gen !== S.gen) return;
      S.polls += 1;
      document.body.dataset.state = "ok";
      showBanner(null);
      render();
      schedule(every);
    } catch (e) {
      if (gen !== S.gen) return;
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
        document.body.dataset.state = "badkey";
        showBanner("The API refused this key (" + e.message + "). Paste another one above.");
        render();
        return; // no polling until a new key is given
      }
      document.body.dataset.state = "error";
      showBanner("Could not reach the API: " + e.message + " (retrying)");
      render();
      schedule(e instanceof ApiError && e.retryAfter ? e.retryAfter * 1000 : every);
    }
  }
  function schedule(ms) {
    clearTimeout(S.timer);
    S.timer = setTimeout(poll, ms);
  }
  function showBanner(text) {
    const b = $("banner");
    b.hidden = !text;
    b.textContent = text || "";
  }

  // -- what the events say ------------------------------------------------------------------------------
  function warmStarts() {
    const out = [];
    for (const j of S.jobs) {
      const ev = S.events.get(j.id);
      const w = ev && ev.list.find((e) => e.kind === "warm_start");
      if (w) out.push({ job: j, event: w, init: String((w.data || {}).init || "") });
    }
    return out;
  }
  const entryOf = (init) => (init.startsWith("bank:") ? init.slice(5) : null);

  function describe(e, job) {
    const d = e.data || {};
    const ws = (l) => (l && l.length ? l.join(", ") : "none");
    switch (e.kind) {
      case "arrive": return "submitted (model " + (d.model || job.model) + ")";
      case "quote":
        return "quoted finish " + clock(d.finish_time) + " on " + d.gpus + " GPU(s)" +
          (d.feasible === false ? " (past the deadline)" : "") +
          (d.predicted_steps ? ", " + num(d.predicted_steps, 0) + " steps predicted" : "") +
          (d.prediction ? " (" + d.prediction + ")" : "") +
          (d.selection_s ? ", selection " + num(d.selection_s, 1) + "s" : "");
      case "admit": return "admitted" + (d.reason ? " (" + d.reason + ")" : "");
      case "decline": return "declined" + (d.reason ? ": " + d.reason : "");
      case "allocate": return "workers " + ws(d.workers) + (d.previous && d.previous.length ? " (was " + ws(d.previous) + ")" : "");
      case "move": return "moved to " + ws(d.workers) + " from " + ws(d.previous);
      case "preempt": return "preempted from " + ws(d.previous);
      case "start": return "started on " + ws(d.workers);
      case "switch": return "worker " + (e.worker || "?") + " switches from " + (d.from || "?") + " to " + (d.to || "?");
      case "warm_start": {
        const entry = entryOf(String(d.init || ""));
        return (entry ? "started from Prompt Bank entry " + entry : "initialised from " + (d.init || "?")) +
          (d.entry_task ? " (task " + d.entry_task + ")" : "") +
          (d.probe_accuracy !== undefined && d.probe_accuracy !== null ? ", probe accuracy " + num(d.probe_accuracy, 2) : "") +
          (d.predicted_steps ? ", predicted " + d.predicted_steps + " steps" : "");
      }
      case "phase": return d.from + " → " + d.to;
      case "progress":
        return "step " + d.steps_done + ", loss " + num(d.loss) +
          (d.accuracy !== null && d.accuracy !== undefined ? ", accuracy " + num(d.accuracy) : "") +
          "; checkpointed at step " + (d.checkpoint_step !== undefined ? d.checkpoint_step : d.steps_done) + (d.replicas > 1 ? " (" + d.replicas + " replicas)" : "");
      case "recover": return "recovered from the checkpoint at step " + d.from_step + " (was " + d.was + ")";
      case "late": return "deadline passed at step " + d.steps_done;
      case "finish":
        return "finished at step " + d.steps_done + ": target " + yesno(d.target_reached) + ", deadline " +
          (d.deadline_met ? "met" : "missed") + ", SLO " + (d.slo_met ? "met" : "missed") + ", " + num(d.gpu_seconds, 1) + " GPU-s";
      case "miss":
        return "SLO missed: " + (d.late_by_s !== null && d.late_by_s !== undefined ? "late by " + dur(d.late_by_s) : "on time") +
          (d.target_reached === false ? ", target not reached" : "");
      case "fail": return (d.worker_lost ? "lost a worker (resumes from step " + d.recovered_from_step + ")" : "failed") + (d.error ? ": " + d.error : "");
      case "cancel": return "cancelled";
      case "bank": return d.added ? "added to the Prompt Bank as " + d.entry + (d.public ? " (public)" : "") : "not added to the Prompt Bank" + (d.error ? ": " + d.error : "");
      default: return JSON.stringify(d);
    }
  }
  const yesno = (v) => (v === true ? "reached" : v === false ? "not reached" : "none");

  function sloBadges(j) {
    const out = [];
    const done = TERMINAL.has(j.status);
    if (j.target_accuracy !== null && j.target_accuracy !== undefined) {
      out.push(j.target_reached === true ? badge("target ✓", "ok") : done ? badge("target ✗", "bad") : badge("target …"));
    }
    if (j.deadline_met === true) out.push(badge("deadline ✓", "ok"));
    else if (j.deadline_met === false) out.push(badge("deadline ✗", "bad"));
    else out.push(Date.now() / 1000 > j.deadline ? badge("late", "warn") : badge("deadline …"));
    if (j.slo_met === true) out.push(badge("SLO met", "ok"));
    else if (j.slo_met === false) out.push(badge("SLO missed", "bad"));
    return out;
  }
  function statusBadge(s) {
    const cls = s === "succeeded" ? "ok" : s === "failed" || s === "declined" ? "bad" : s === "cancelled" ? "" : "run";
    return badge(s, cls);
  }
  function quoteVsActual(j) {
    const q = j.quote && j.quote.finish_time;
    if (q === null || q === undefined) return j.finished_at ? "– / " + clock(j.finished_at) : "–";
    if (!j.finished_at) return clock(q) + " / running";
    const delta = j.finished_at - q;
    return clock(q) + " / " + clock(j.finished_at) + " (" + dur(delta) + (delta <= 0 ? " early)" : " late)");
  }

  // -- rendering ------------------------------------------------------------------------------------------
  function render() {
    try {
      renderHeader();
      renderSummary();
      renderJobs();
      renderJob();
      renderPool();
      renderBank();
    } catch (e) {
      showBanner("The page failed to draw: " + e.message);
      console.error(e);
    }
  }

  function renderHeader() {
    const v = $("viewer");
    document.body.classList.toggle("admin", Boolean(isAdmin()));
    if (!S.key) {
      v.textContent = "no key";
      v.className = "viewer";
    } else if (!S.viewer) {
      v.textContent = "…";
      v.className = "viewer";
    } else if (isAdmin()) {
      v.textContent = "operator (admin key)";
      v.className = "viewer admin";
    } else {
      v.textContent = "tenant " + S.viewer.tenant;
      v.className = "viewer tenant";
    }
    const u = $("updated");
    u.dataset.polls = String(S.polls);
    u.textContent = S.polls ? "updated " + clock(Date.now() / 1000) + " · every " + every / 1000 + " s" : "";
  }

  function card(k, v, title) {
    return el("div", { class: "card", title }, el("div", { class: "v", text: v }), el("div", { class: "k", text: k }));
  }

  function renderSummary() {
    const box = $("summary");
    if (!S.viewer) {
      box.replaceChildren();
      return;
    }
    const by = (f) => S.jobs.filter(f).length;
    const ended = S.jobs.filter((j) => TERMINAL.has(j.status));
    box.replaceChildren(
      card("jobs (latest " + JOB_LIMIT + ")", String(S.jobs.length)),
      card("running or queued", String(by((j) => !TERMINAL.has(j.status)))),
      card("succeeded", String(by((j) => j.status === "succeeded"))),
      card("failed / declined / cancelled", String(by((j) => ["failed", "declined", "cancelled"].includes(j.status)))),
      card("SLO met (of ended)", ended.length ? by((j) => j.slo_met === true) + " / " + ended.length : "–",
        "quality target reached by the deadline"),
      card("deadlines met (of ended)", ended.length ? by((j) => j.deadline_met === true) + " / " + ended.length : "–"),
    );
  }

  function renderJobs() {
    const tbody = $("jobs").querySelector("tbody");
    $("jobs-empty").hidden = S.jobs.length > 0 || !S.viewer;
    const now = Date.now() / 1000;
    if (!S.selected || (!S.pinned && !S.jobs.some((j) => j.id === S.selected))) S.selected = defaultJob();
    setRows(tbody, S.jobs.map((j) => {
      const entry = entryOf(String(j.init || ""));
      const left = j.deadline - now;
      const tr = el("tr", {
        "data-job": j.id, "data-status": j.status, "data-steps": j.progress.steps_done,
        class: j.id === S.selected ? "selected" : null,
      },
      cell(el("span", { class: "id", text: j.id, title: j.id })),
      cell(j.tenant || "–", "admin-only"),
      cell(j.model),
      cell(statusBadge(j.status)),
      cell(j.progress.steps_done + " / " + j.max_steps, "num"),
      cell(num(j.progress.accuracy) + " / " + num(j.target_accuracy, 2), "num"),
      cell(TERMINAL.has(j.status) ? clock(j.deadline) : clock(j.deadline) + (left >= 0 ? " (in " + dur(left) + ")" : " (passed)")),
      cell(quoteVsActual(j)),
      cell(sloBadges(j)),
      cell(entry ? el("span", { class: "id", text: "bank " + short(entry), title: j.init }) : j.init || "–"),
      cell(num(j.gpu_seconds, 1), "num"));
      tr.addEventListener("click", () => {
        S.selected = j.id;
        S.pinned = true;
        render();
      });
      return tr;
    }));
  }
  function defaultJob() {
    // the newest job with a learning curve, else the newest job
    const withCurve = S.jobs.find((j) => (S.events.get(j.id) || { list: [] }).list.some((e) => e.kind === "progress"));
    return (withCurve || S.jobs[0] || {}).id || null;
  }

  function renderJob() {
    const j = S.jobs.find((x) => x.id === S.selected);
    const view = $("job-view");
    view.hidden = !j;
    if (!j) return;
    const ev = (S.events.get(j.id) || { list: [] }).list;
    $("job-title").textContent = j.id + (j.tenant ? " (" + j.tenant + ")" : "");
    $("job-status").replaceChildren(statusBadge(j.status), ...sloBadges(j));
    const q = j.quote || {};
    const fact = (k, v) => el("span", {}, el("b", { text: k + ": " }), v);
    const facts = [
      fact("model", j.model),
      fact("submitted", clock(j.created_at)),
      fact("deadline", clock(j.deadline)),
      fact("quoted finish", q.finish_time ? clock(q.finish_time) + " on " + q.gpus + " GPU(s)" : "–"),
      fact("started", clock(j.started_at)),
      fact("finished", clock(j.finished_at)),
      fact("target", num(j.target_accuracy, 2)),
      fact("accuracy", num(j.progress.accuracy)),
      fact("steps", j.progress.steps_done + " / " + j.max_steps),
      fact("checkpoint", j.progress.checkpoint_step === null ? "–" : "step " + j.progress.checkpoint_step),
      fact("start", j.init || "–"),
      fact("GPU-s charged", num(j.gpu_seconds, 1)),
    ];
    if (j.error) facts.push(fact("error", j.error));
    $("job-facts").replaceChildren(...facts);
    renderCurve(j, ev);
    renderTimeline(j, ev);
    setRows($("events").querySelector("tbody"), ev.slice().reverse().map((e) => el("tr", { "data-kind": e.kind },
      cell(clock(e.time)), cell(badge(e.kind)), cell(e.worker || "–"), cell(describe(e, j)))));
  }

  function chartWidth(box) {
    return Math.max(300, Math.floor(box.getBoundingClientRect().width || box.parentElement.clientWidth || 600));
  }

  function renderCurve(j, ev) {
    const box = $("curve-chart");
    const pts = ev.filter((e) => e.kind === "progress" && e.data && e.data.steps_done !== undefined);
    // one point a step (the last report of it), in step order
    const byStep = new Map();
    for (const e of pts) byStep.set(e.data.steps_done, e.data);
    const steps = [...byStep.keys()].sort((a, b) => a - b);
    const acc = steps.map((s) => (byStep.get(s).accuracy === null ? null : byStep.get(s).accuracy));
    const loss = steps.map((s) => byStep.get(s).loss);
    const target = steps.map(() => (j.target_accuracy === null ? null : j.target_accuracy));
    box.dataset.points = String(steps.length);
    box.dataset.job = j.id;
    $("curve-empty").hidden = steps.length > 0;
    const data = [steps, acc, loss, target];
    if (!steps.length) {
      if (S.charts.curve) S.charts.curve.destroy();
      S.charts.curve = null;
      box.replaceChildren();
      return;
    }
    if (S.charts.curve && S.charts.curveJob === j.id) {
      S.charts.curve.setData(data);
      return;
    }
    if (S.charts.curve) S.charts.curve.destroy();
    box.replaceChildren();
    S.charts.curveJob = j.id;
    S.charts.curve = new uPlot({
      width: chartWidth(box),
      height: 240,
      scales: { x: { time: false }, acc: { range: [0, 1] }, loss: { auto: true } },
      series: [
        { label: "step" },
        { label: "accuracy", scale: "acc", stroke: "#2f6fdb", width: 2, spanGaps: true, points: { show: true, size: 6 } },
        { label: "loss", scale: "loss", stroke: "#e07b39", width: 1.5 },
        { label: "target", scale: "acc", stroke: "#1f8a4c", width: 1.5, dash: [6, 4], points: { show: false } },
      ],
      axes: [
        { label: "step" },
        { scale: "acc", label: "accuracy" },
        { scale: "loss", side: 1, label: "loss", grid: { show: false } },
      ],
    }, data, box);
  }

  const LANES = [
    ["lifecycle", ["arrive", "quote", "admit", "decline", "phase", "start", "finish", "cancel", "late", "miss", "fail", "recover"]],
    ["placement", ["allocate", "move", "preempt", "warm_start"]],
    ["progress", ["progress"]],
    ["bank", ["bank"]],
  ];
  const GUTTER = 78; // px on the timeline's left for the lanes' names
  function renderTimeline(j, ev) {
    const box = $("timeline");
    const now = Date.now() / 1000;
    const finite = (t) => t !== null && t !== undefined && isFinite(t);
    const times = ev.map((e) => e.time);
    const t0 = Math.min(j.created_at, ...times);
    const qf = j.quote && finite(j.quote.finish_time) ? j.quote.finish_time : null;
    const active = [j.finished_at || now, ...times];
    if (qf) active.push(qf);
    let tEnd = Math.max(...active.filter(finite));
    // the deadline is drawn to scale unless it is far beyond the job's activity: then at the right edge
    const deadlineOnScale = finite(j.deadline) && j.deadline <= tEnd + 0.5 * Math.max(1, tEnd - t0);
    if (deadlineOnScale) tEnd = Math.max(tEnd, j.deadline);
    const span = Math.max(1e-6, tEnd - t0) * 1.04;
    const f = (t) => Math.min(1, Math.max(0, (t - t0) / span));
    const at = (t) => "calc(" + GUTTER + "px + (100% - " + (GUTTER + 12) + "px) * " + f(t).toFixed(4) + ")";
    const kids = [];
    const laneY = (i) => 34 + i * 30;
    LANES.forEach(([name], i) => {
      const lane = el("div", { class: "lane" });
      lane.style.top = laneY(i) + "px";
      const label = el("div", { class: "lane-label", text: name });
      label.style.top = laneY(i) + "px";
      kids.push(lane, label);
    });
    const axis = (t, cls) => {
      const a = el("div", { class: "tick " + cls, text: clock(t) });
      a.style.left = at(t);
      kids.push(a);
    };
    axis(t0, "first");
    axis(t0 + span, "last");
    const labels = [];
    const vline = (t, cls, text) => {
      const v = el("div", { class: "vline " + cls });
      v.style.left = at(t);
      kids.push(v);
      if (!text) return;
      const l = el("div", { class: "vlabel " + cls, text });
      l.style.left = at(t);
      // a label near an edge stays inside; a second label close to the first goes one line up
      if (f(t) > 0.8) l.classList.add("end");
      else if (f(t) < 0.15) l.classList.add("start");
      if (labels.some((x) => Math.abs(x - f(t)) < 0.25)) l.classList.add("up");
      labels.push(f(t));
      kids.push(l);
    };
    if (qf) vline(qf, "quote", "quoted finish " + clock(qf));
    if (deadlineOnScale) vline(j.deadline, "deadline", "deadline " + clock(j.deadline));
    else if (finite(j.deadline)) {
      // far beyond the job's activity: named at the right edge, a line above the other labels
      const l = el("div", { class: "vlabel deadline offscale up", text: "deadline " + clock(j.deadline) + " →" });
      kids.push(l);
    }
    if (!TERMINAL.has(j.status)) vline(now, "now", null);
    const last = LANES.map(() => ({ f: -1, n: 0 }));
    for (const e of ev) {
      let lane = LANES.findIndex(([, ks]) => ks.includes(e.kind));
      const known = lane >= 0;
      if (!known) lane = 0;
      // marks at (nearly) the same time in one lane are stacked a little, so each can be seen
      const st = last[lane];
      const fx = f(e.time);
      st.n = Math.abs(fx - st.f) < 0.012 ? (st.n + 1) % 4 : 0;
      st.f = fx;
      const m = el("div", {
        class: "mark " + (known ? "k-" + e.kind : "k-other"),
        "data-kind": e.kind,
        title: clock(e.time) + " " + e.kind + ": " + describe(e, j),
      });
      m.style.left = at(e.time);
      m.style.top = laneY(lane) - 6 * st.n + "px";
      kids.push(m);
    }
    box.replaceChildren(...kids);
    box.dataset.events = String(ev.length);
    const seen = [...new Set(ev.map((e) => e.kind))];
    $("timeline-legend").replaceChildren(...seen.map((k) =>
      el("span", {}, el("i", { class: LANES.some(([, ks]) => ks.includes(k)) ? "k-" + k : "k-other" }), k)));
  }

  function renderPool() {
    const p = S.pool;
    const c = S.cluster;
    const gpu = $("gpu");
    if (!p || !c) {
      gpu.replaceChildren();
      return;
    }
    const held = c.gpu_seconds_held;
    const busy = c.gpu_seconds_busy;
    gpu.replaceChildren(
      card("workers warm / capacity", (Object.values(c.warm_models || {}).reduce((a, b) => a + b, 0)) + " / " + c.capacity),
      card("warm by model", Object.entries(c.warm_models || {}).sort().map(([m, n]) => m + " " + n).join(", ") || "none",
        "warm workers per base LLM, now"),
      card("GPU-s held", num(held, 1), "the whole pool, since this service started"),
      card("GPU-s busy", num(busy, 1), "of the held ones, running a job's work"),
      card(isAdmin() ? "GPU-s charged (all jobs)" : "GPU-s charged (your jobs)", num(p.gpu_seconds_charged, 1)),
      card("utilisation", pct(c.utilisation)),
      card("policy", c.policy || "–"),
    );
    const box = $("pool-chart");
    const series = p.series || [];
    const data = [
      series.map((s) => s.t),
      series.map((s) => s.warm),
      series.map((s) => s.busy),
      series.map((s) => s.provisioning),
    ];
    box.dataset.points = String(series.length);
    if (series.length) {
      if (S.charts.pool) S.charts.pool.setData(data);
      else {
        const step = uPlot.paths.stepped({ align: 1 });
        S.charts.pool = new uPlot({
          width: chartWidth(box),
          height: 200,
          scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(c.capacity || 1, hi) + 0.5] } },
          series: [
            {},
            { label: "warm", stroke: "#1f8a4c", width: 2, paths: step, fill: "rgba(31,138,76,0.08)" },
            { label: "busy", stroke: "#2f6fdb", width: 2, paths: step },
            { label: "provisioning", stroke: "#b7791f", width: 2, dash: [5, 3], paths: step },
          ],
          axes: [{}, { label: "workers", incrs: [1, 2, 5, 10, 20, 50] }],
        }, data, box);
      }
    }
    const live = new Map((c.workers || []).map((w) => [w.id, w]));
    const lives = (p.workers || []).slice().sort((a, b) => b.requested_at - a.requested_at);
    for (const w of live.values()) if (!lives.some((l) => l.id === w.id)) lives.unshift({ id: w.id, model: w.model, requested_at: w.requested_at, ready_at: w.ready_at });
    setRows($("workers").querySelector("tbody"), lives.map((w) => {
      const now = live.get(w.id);
      const state = now ? now.state : w.end === "fail" ? "failed" : w.end === "restart" ? "gone (restart)" : "released";
      // the base LLM it holds now (the live pool's word first), and where it switched from
      const model = (now && now.model) || w.model || "–";
      const switches = w.switches || [];
      const from = now && now.switching_from ? " (switching from " + now.switching_from + ")"
        : switches.length ? " (was " + switches.map((s) => s.from).join(", ") + ")" : "";
      return el("tr", { "data-worker": w.id, "data-model": model },
        cell(el("span", { class: "id", text: w.id })),
        cell(el("span", { text: model + from, title: switches.map((s) => clock(s.t) + " " + s.from + " → " + s.to).join("\n") })),
        cell(badge(state, now ? (now.state === "provisioning" ? "warn" : now.job ? "run" : "ok") : w.end === "fail" ? "bad" : "")),
        cell(now && now.job ? short(now.job) : "–"),
        cell(clock(w.requested_at)),
        cell(w.ready_at ? dur(w.ready_at - w.requested_at) : "–"),
        cell(w.ended_at ? clock(w.ended_at) + (w.error ? ": " + w.error : "") : "–"),
        cell(now ? num(now.busy_seconds, 1) : "–", "num"));
    }));
  }

  function renderBank() {
    const starts = warmStarts();
    const byEntry = new Map();
    for (const s of starts) {
      const id = entryOf(s.init);
      if (id) byEntry.set(id, [...(byEntry.get(id) || []), s.job.id]);
    }
    $("bank-empty").hidden = S.bank.length > 0 || !S.viewer;
    setRows($("bank").querySelector("tbody"), S.bank.map((b) => el("tr", { "data-entry": b.id },
      cell(el("span", { class: "id", text: short(b.id), title: b.id })),
      cell(b.model),
      cell(b.task || "–"),
      cell(num(b.accuracy), "num"),
      cell(b.steps === null ? "–" : String(b.steps), "num"),
      cell(b.owner ? b.owner : b.public ? "public" : b.mine ? "yours" : "–"),
      cell(b.source_job ? el("span", { class: "id", text: short(b.source_job), title: b.source_job }) : "–"),
      cell((byEntry.get(b.id) || []).map((id) => el("span", { class: "id badge", text: short(id), title: id }))))));
    const known = new Set(S.bank.map((b) => b.id));
    const list = $("warm-starts");
    list.replaceChildren(...starts.map((s) => {
      const id = entryOf(s.init);
      const d = s.event.data || {};
      const what = id
        ? "started from entry " + short(id) + (known.has(id) ? "" : " (not listed here)")
        : "kept its own init (" + (s.init || "?") + ")";
      return el("li", { "data-job": s.job.id },
        el("span", { class: "id", text: s.job.id }), " " + what +
        (d.probe_accuracy !== undefined && d.probe_accuracy !== null ? ", probe accuracy " + num(d.probe_accuracy, 2) : "") +
        " at " + clock(s.event.time));
    }));
    if (!starts.length) list.replaceChildren(el("li", { class: "muted", text: "No job has asked the Prompt Bank for a warm start yet." }));
  }

  function resize() {
    for (const [name, id] of [["curve", "curve-chart"], ["pool", "pool-chart"]]) {
      const ch = S.charts[name];
      if (ch) ch.setSize({ width: chartWidth($(id)), height: ch.height });
    }
  }

  // -- start ------------------------------------------------------------------------------------------------
  takeKeyFromUrl();
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const k = $("key-input").value.trim();
    $("key-input").value = "";
    if (k) setKey(k);
  });
  $("forget-key").addEventListener("click", () => setKey(null));
  window.addEventListener("resize", resize);
  render();
  poll();
})();
