"""Selection latency of the Prompt Bank at 1k, 10k and 100k entries, and where the time goes.

Banks are filled with *variants of real prompts*: the base set is every tuned prompt found under
``--prompts-dir`` (the engine's convergence-profile runs) plus the text-init prompt of each of the 16
shared tasks; entry ``i`` is base ``i mod B`` plus Gaussian noise (``--noise`` x the base's per-element
std) and its task vector is the base task's MiniLM vector plus small noise, renormalised.  So the larger
banks hold many near-duplicates of the same tasks, the hard case for a two-layer index (big, dense
clusters).  The query task (``--task``) is held out of the base set.

Measured per bank size, on the job's model (``smollm2-135m``) on this CPU:
- ``features_s``: MiniLM embedding of the job (description, labels, 16 sample rows);
- ``index_s``: reading centroids, ranking clusters, reading the members of the expanded clusters;
- ``probes_s``: the LLM forward passes of the default probe budget (``bank.Budget()``, what
  ``tune --init bank:DIR`` uses; ``--rows/--reps/--members`` change it);
- ``total_s``; and the build cost (insert + k-means) for the record.
Index-only timings are repeated ``--repeats`` times (median and range); probes ``--probe-repeats`` times.

    nice -n 10 python benchmarks/bank_latency.py --sizes 1000,10000,100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "bank_latency"

TASKS = [
    "sst2", "mr", "cr", "subj", "agnews", "trec", "sms_spam", "tweet_sentiment", "tweet_emotion",
    "tweet_hate", "sst5", "imdb", "snli", "rte", "cb", "mrpc",
]  # fmt: skip


class CPUTimed:
    """Wraps a probe and adds up its process CPU time: less sensitive than wall time to other jobs here."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.cpu_s = 0.0

    def __call__(self, prompts: Any) -> Any:
        c = time.process_time()
        try:
            return self.fn(prompts)
        finally:
            self.cpu_s += time.process_time() - c


def base_prompts(args: argparse.Namespace, loaded: Any, held_out: str) -> list[dict[str, Any]]:
    from prompttuner.bank import features as feat
    from prompttuner.config import shared_data
    from prompttuner.tuning import TextInit, load_prompt, load_task, resolve_init

    out = []
    vec_cache: dict[str, np.ndarray] = {}
    for name in TASKS:
        if name == held_out:
            continue
        task = load_task(shared_data() / "tasks" / name)
        tv = vec_cache.setdefault(
            name, feat.task_vector(task.description, task.labels, [e.text for e in task.train[:8]])
        )
        tensors = [("text-init", resolve_init(TextInit(), loaded, task, num_virtual_tokens=args.tokens))]
        for f in sorted((Path(args.prompts_dir) / name).glob("*/prompt.safetensors")):
            try:
                t, _ = load_prompt(f)
            except ValueError:
                continue
            if t.shape == (args.tokens, loaded.embed_dim):
                tensors.append((f.parent.name, t))
        for run, t in tensors:
            out.append({"task": task, "name": name, "run": run, "tensor": t, "task_vec": tv})
    return out


def build_bank(
    args: argparse.Namespace, loaded: Any, bases: list[dict[str, Any]], n: int, folder: Path
) -> dict:
    from prompttuner.bank import NewEntry, PromptBank
    from prompttuner.bank import features as feat

    if folder.exists():
        shutil.rmtree(folder)
    rng = np.random.default_rng(n)
    gen = torch.Generator().manual_seed(n)
    t0 = time.perf_counter()
    bank = PromptBank(folder)
    chunk: list[NewEntry] = []
    for i in range(n):
        b = bases[i % len(bases)]
        base = b["tensor"]
        t = base + args.noise * float(base.std()) * torch.randn(base.shape, generator=gen)
        tv = b["task_vec"] + rng.normal(0, 0.02, b["task_vec"].shape).astype(np.float32)
        tv /= np.linalg.norm(tv)
        chunk.append(
            NewEntry(
                tensor=t, model=loaded.name, task_description=b["task"].description, labels=b["task"].labels,
                accuracy=0.7, steps=30, task_name=f"{b['name']}~{i // len(bases)}", task_vec=tv,
                prompt_vec=feat.prompt_vector(t), extra={"base": f"{b['name']}/{b['run']}"},
            )
        )  # fmt: skip
        if len(chunk) >= 5000 or i == n - 1:
            bank.add_many(chunk, reindex=False)
            chunk = []
    insert_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    clusters = bank.reindex(loaded.name)[loaded.name]
    cluster_s = time.perf_counter() - t1
    bank.close()
    return {"insert_s": round(insert_s, 2), "cluster_s": round(cluster_s, 2), "clusters": clusters}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="sst2", help="the job (held out of the bank)")
    ap.add_argument("--prompts-dir", default="/work/artifacts/prompts")
    ap.add_argument("--work", default="/tmp/prompttuner-bank-latency")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--rows", type=int, default=None, help="probe rows (default: Budget's)")
    ap.add_argument("--reps", type=int, default=None, help="representatives probed (default: Budget's)")
    ap.add_argument("--members", type=int, default=None, help="members probed (default: Budget's)")
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--probe-repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the bank folders")
    ap.add_argument("--merge", action="store_true", help="keep other sizes already in the results file")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from prompttuner.bank import Budget, PromptBank, job_query
    from prompttuner.bank import features as feat
    from prompttuner.bank.probe import make_probe
    from prompttuner.bank.select import select
    from prompttuner.config import shared_data
    from prompttuner.tuning import TextInit, load_model, load_task, resolve_init

    t0 = time.perf_counter()
    loaded = load_model(args.model)
    load_s = time.perf_counter() - t0
    task = load_task(shared_data() / "tasks" / args.task)
    given = {"rep_probes": args.reps, "member_probes": args.members, "sample_rows": args.rows}
    budget = Budget(**{k: v for k, v in given.items() if v is not None})
    job = job_query(task, loaded.name, embed_dim=loaded.embed_dim, budget=budget, num_tokens=args.tokens)
    feat.task_vector("warm up", ["a"])  # load MiniLM outside the timings (a warm worker has it loaded)
    bases = base_prompts(args, loaded, args.task)
    probe = CPUTimed(make_probe(loaded, task, budget, max_length=args.max_length))
    # as select_init: the job's own text init is probed beside the candidates (its fallback)
    baselines = {"text": resolve_init(TextInit(), loaded, task, num_virtual_tokens=args.tokens)}
    result: dict[str, Any] = {
        "machine": f"{os.cpu_count()}-core CPU (shared with other jobs), torch {torch.__version__}, "
        f"{args.threads} torch threads",
        "model": loaded.name,
        "model_load_s": round(load_s, 2),
        "query_task": args.task,
        "base_prompts": len(bases),
        "base_tuned_prompts": sum(1 for b in bases if b["run"] != "text-init"),
        "budget": budget.__dict__,
        "args": vars(args),
        "sizes": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge and Path(str(out) + ".json").is_file():  # sizes measured by an earlier invocation
        result["sizes"] = json.loads(Path(str(out) + ".json").read_text()).get("sizes", {})
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for n in [int(s) for s in args.sizes.split(",")]:
        folder = Path(args.work) / f"bank-{n}"
        build = build_bank(args, loaded, bases, n, folder)
        print(f"n={n}: built {build}", flush=True)
        bank = PromptBank(folder, create=False)
        feats, feats_cpu, index, index_cpu = [], [], [], []
        for _ in range(args.repeats):
            tf, cf = time.perf_counter(), time.process_time()
            jv = feat.task_vector(job.description, job.labels, job.sample_texts)
            feats.append(time.perf_counter() - tf)
            feats_cpu.append(time.process_time() - cf)
            ci = time.process_time()
            sel = select(bank, job, None, budget=budget, job_vec=jv)
            index_cpu.append(time.process_time() - ci)
            index.append(sel.timings["index_s"])
        full = []
        for _ in range(args.probe_repeats):
            probe.cpu_s = 0.0
            c0 = time.process_time()
            sel = select(bank, job, probe, budget=budget, baselines=baselines)
            full.append(dict(sel.timings, probes_cpu_s=probe.cpu_s, total_cpu_s=time.process_time() - c0))
        row = {
            "build": build,
            "features_s": {"median": statistics.median(feats), "min": min(feats), "max": max(feats)},
            "features_cpu_s": {"median": statistics.median(feats_cpu)},
            "index_cpu_s": {"median": statistics.median(index_cpu), "max": max(index_cpu)},
            "index_s": {"median": statistics.median(index), "min": min(index), "max": max(index)},
            "with_probes": full,
            "probe_evaluations": sel.info["probe_evaluations"],
            "chosen": {"task": sel.entry.task_name, "base": sel.entry.extra.get("base"), "loss": sel.loss},
            "tensor_bytes": sum(p.stat().st_size for p in (folder / "tensors").rglob("*.safetensors")),
        }
        bank.close()
        row["run_started"] = started
        result["sizes"][str(n)] = row
        print(f"n={n}: {json.dumps(row)}", flush=True)
        Path(str(out) + ".json").write_text(json.dumps(result, indent=2) + "\n")  # incremental
        if not args.keep:
            shutil.rmtree(folder)
    sizes = result["sizes"]
    if "1000" in sizes and "100000" in sizes:
        a, b = sizes["1000"], sizes["100000"]
        result["ratio_100k_over_1k"] = {
            "index": b["index_s"]["median"] / a["index_s"]["median"],
            "total": statistics.median(x["total_s"] for x in b["with_probes"])
            / statistics.median(x["total_s"] for x in a["with_probes"]),
        }
    Path(str(out) + ".json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "sizes"}, indent=2))


if __name__ == "__main__":
    main()
