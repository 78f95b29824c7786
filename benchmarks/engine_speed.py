"""Engine speed: training steps/s of PromptTrainer vs a bare PEFT prompt-tuning loop, plus model load time.

Both loops train the same model on the same batches (same examples, same truncation, same batch size and
number of virtual tokens, AdamW lr 0.03).  The bare loop is what a user would write with PEFT:
``get_peft_model`` + ``labels`` with -100 everywhere but the label word, the model's own loss over the full
vocabulary at every position.  Steps alternate engine and baseline so that load from other processes on
this shared machine hits both alike (step by step); CPU time per step is the main figure, because
wall time on a machine shared by many jobs is mostly waiting.

Model load is measured in fresh subprocesses: cold (GGUF conversion + writing the safetensors cache, in an
empty cache folder) and cached; each reports its peak RSS.

    nice -n 10 python benchmarks/engine_speed.py --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from prompttuner.config import shared_data  # noqa: E402
from prompttuner.tuning import PromptTrainer, TuningConfig, load_model, load_task  # noqa: E402
from prompttuner.tuning.engine import encode, format_example  # noqa: E402
from prompttuner.tuning.verbalizer import label_word  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_probe(model: str) -> None:
    """Run in a subprocess: print load seconds and peak RSS as JSON."""
    t0, c0 = time.perf_counter(), time.process_time()
    load_model(model)
    doc = {
        "load_s": time.perf_counter() - t0,
        "load_cpu_s": time.process_time() - c0,
        "peak_rss_mib": _peak_rss_mib(),
    }
    print(json.dumps(doc))


def measure_load(model: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    cmd = [sys.executable, __file__, "--load-probe", "--model", model]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env["PROMPTTUNER_CACHE"] = tmp
        for label in ("cold", "cached"):
            t0 = time.perf_counter()
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            doc = json.loads(res.stdout.strip().splitlines()[-1])
            doc["process_s"] = time.perf_counter() - t0
            out[label] = doc
            print(
                f"load {label}: {doc['load_s']:.1f} s (process {doc['process_s']:.1f} s), "
                f"peak RSS {doc['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    return out


class BarePeft:
    """The textbook PEFT loop on its own copy of the model."""

    def __init__(self, model_dir: str, labels: list[str], num_virtual_tokens: int, lr: float) -> None:
        from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        cfg = PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )
        self.model = get_peft_model(base, cfg)
        self.model.train()
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=lr)

    def step(self, loaded: Any, examples: list[Any], max_length: int) -> float:
        tok = loaded.tokenizer
        rows, labels = [], []
        prompts = encode(loaded, [format_example(e) for e in examples], max_length)
        for ids, ex in zip(prompts, examples, strict=True):
            ans = list(tok(label_word(ex.label), add_special_tokens=False)["input_ids"])
            rows.append(ids + ans)
            labels.append([-100] * len(ids) + ans)
        longest = max(len(r) for r in rows)
        pad = int(tok.pad_token_id)
        input_ids = torch.tensor([r + [pad] * (longest - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows])
        lab = torch.tensor([r + [-100] * (longest - len(r)) for r in labels])
        out = self.model(input_ids=input_ids, attention_mask=mask, labels=lab)
        out.loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())


def measure_steps(args: argparse.Namespace) -> dict[str, Any]:
    from prompttuner.config import cache_dir

    loaded = load_model(args.model)
    results: dict[str, Any] = {}
    for task_name in args.tasks:
        task = load_task(shared_data() / "tasks" / task_name)
        cfg = TuningConfig(
            num_virtual_tokens=args.virtual_tokens,
            batch_size=args.batch_size,
            max_length=args.max_length,
            seed=0,
        )
        trainer = PromptTrainer(loaded, task, cfg)
        bare = BarePeft(str(cache_dir() / "models" / args.model), task.labels, args.virtual_tokens, 0.03)
        eng_w: list[float] = []
        peft_w: list[float] = []
        eng_c: list[float] = []
        peft_c: list[float] = []
        trainer.step()  # warm-up both (first-call allocations)
        bare.step(loaded, [trainer.train[i] for i in trainer.next_batch()], args.max_length)
        for s in range(args.steps):
            # alternate step by step on the very same batch, so load changes hit both alike
            batch = [trainer.train[i] for i in trainer.next_batch()]
            w0, c0 = time.perf_counter(), time.process_time()
            trainer.step()
            w1, c1 = time.perf_counter(), time.process_time()
            bare.step(loaded, batch, args.max_length)
            w2, c2 = time.perf_counter(), time.process_time()
            eng_w.append(w1 - w0)
            peft_w.append(w2 - w1)
            eng_c.append(c1 - c0)
            peft_c.append(c2 - c1)
            print(
                f"{task_name} step {s}: engine {w1 - w0:.2f} s wall / {c1 - c0:.2f} s cpu, "
                f"bare PEFT {w2 - w1:.2f} s wall / {c2 - c1:.2f} s cpu",
                flush=True,
            )
        ratios_c = [p / e for p, e in zip(peft_c, eng_c, strict=True)]
        ratios_w = [p / e for p, e in zip(peft_w, eng_w, strict=True)]
        mean_tokens = statistics.mean(
            len(x) for x in encode(loaded, [format_example(e) for e in trainer.train[:200]], args.max_length)
        )
        e_c, p_c = statistics.median(eng_c), statistics.median(peft_c)
        results[task_name] = {
            "engine_cpu_s_per_step": e_c,
            "peft_cpu_s_per_step": p_c,
            "engine_wall_s_per_step": statistics.median(eng_w),
            "peft_wall_s_per_step": statistics.median(peft_w),
            "engine_steps_per_cpu_s": 1 / e_c,
            "peft_steps_per_cpu_s": 1 / p_c,
            "engine_samples_per_cpu_s": args.batch_size / e_c,
            "peft_samples_per_cpu_s": args.batch_size / p_c,
            "speedup_cpu_median": statistics.median(ratios_c),
            "speedup_cpu_min": min(ratios_c),
            "speedup_cpu_max": max(ratios_c),
            "speedup_wall_median": statistics.median(ratios_w),
            "speedup_wall_min": min(ratios_w),
            "speedup_wall_max": max(ratios_w),
            "steps": args.steps,
            "mean_text_tokens": round(mean_tokens, 1),
        }
    results["peak_rss_mib"] = _peak_rss_mib()
    return results


def write_md(doc: dict[str, Any], path: Path) -> None:
    s = doc["settings"]
    lines = [
        "# Engine speed: PromptTrainer vs a bare PEFT prompt-tuning loop",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {doc['machine']}; heavily shared with other jobs (load average ~10 on 2 cores), so wall "
        "times are mostly waiting: the main figure is CPU time of this single-threaded process per step "
        "(`time.process_time`). Engine and baseline alternate step by step on the same batch; the ratio "
        "is taken per step and its spread shown.",
        f"Settings: model {s['model']}, batch {s['batch_size']}, {s['virtual_tokens']} virtual tokens, "
        f"max_length {s['max_length']}, {s['threads']} torch thread(s).",
        "",
        "| task | text tokens (mean) | engine CPU s/step | bare PEFT CPU s/step | engine samples per CPU-s "
        "| speedup by CPU time (median, min-max) | speedup by wall time (median, min-max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in doc["steps"].items():
        if not isinstance(r, dict):
            continue
        lines.append(
            f"| {name} | {r['mean_text_tokens']} | {r['engine_cpu_s_per_step']:.2f} | "
            f"{r['peft_cpu_s_per_step']:.2f} | {r['engine_samples_per_cpu_s']:.2f} | "
            f"{r['speedup_cpu_median']:.2f}x ({r['speedup_cpu_min']:.2f}-{r['speedup_cpu_max']:.2f}) | "
            f"{r['speedup_wall_median']:.2f}x ({r['speedup_wall_min']:.2f}-{r['speedup_wall_max']:.2f}) |"
        )
    ld = doc.get("load")
    if ld:
        lines += [
            "",
            f"Model load (`load_model`, wall / CPU seconds): cold (GGUF conversion + writing the cache) "
            f"{ld['cold']['load_s']:.1f} / {ld['cold']['load_cpu_s']:.1f} s, cached "
            f"{ld['cached']['load_s']:.1f} / {ld['cached']['load_cpu_s']:.1f} s; "
            f"peak RSS {ld['cold']['peak_rss_mib']:.0f} MiB cold, "
            f"{ld['cached']['peak_rss_mib']:.0f} MiB cached.",
        ]
    lines += [
        f"Peak RSS of the step benchmark process (engine + a second model copy for PEFT): "
        f"{doc['steps']['peak_rss_mib']:.0f} MiB.",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", nargs="+", default=["sst2", "imdb"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--virtual-tokens", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per task (each loop)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--load-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.load_probe:
        load_probe(args.model)
        return 0
    doc: dict[str, Any] = {
        "command": "python benchmarks/engine_speed.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared), torch {torch.__version__}",
        "settings": {
            "model": args.model,
            "batch_size": args.batch_size,
            "virtual_tokens": args.virtual_tokens,
            "max_length": args.max_length,
            "threads": args.threads,
        },
    }
    if not args.skip_load:
        doc["load"] = measure_load(args.model)
    doc["steps"] = measure_steps(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "engine_speed.json").write_text(json.dumps(doc, indent=2) + "\n")
    write_md(doc, RESULTS / "engine_speed.md")
    print((RESULTS / "engine_speed.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
