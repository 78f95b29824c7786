"""The same baseline runs on two CPUs, and a stream order read against baselines of its own CPU.

Training is deterministic on one machine, not across CPUs: the text-init baselines of the service stream
(``bank_stream.py --phase text``, the committed settings) were rerun on another CPU, and this pairs them
job by job with the committed ones (steps to target, a miss counting as the budget), then reads one stream
order of a bank run (run on that other CPU) against the text-init baselines of both CPUs::

    python benchmarks/bank_cross_cpu.py \\
        --base benchmarks/results/bank_stream.runs.jsonl \\
        --rerun benchmarks/results/bank_stream_race2/text_epyc/bank_stream.runs.jsonl \\
        --stream benchmarks/results/bank_stream_race2/bank_stream.runs.jsonl --order 1 \\
        --out benchmarks/results/bank_stream_race2/text_epyc/cross_cpu.json

Writes the JSON and a ``.md`` beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bank_speedup import read_runs  # noqa: E402
from bank_stream import cost_steps  # noqa: E402
from bank_stream_compare import counts  # noqa: E402


def steps_of(run: dict[str, Any], budget: int) -> float:
    return cost_steps(run["steps"] if run["reached"] else None, budget)


def paired(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """``a`` against ``b`` on their common jobs: ratio b / a (> 1: ``a`` took fewer steps)."""
    jobs = sorted(set(a) & set(b))
    return {
        **counts([b[j] / a[j] for j in jobs]),
        "steps_a": sum(a[j] for j in jobs),
        "steps_b": sum(b[j] for j in jobs),
    }


def compare(base: list[dict], rerun: list[dict], stream: list[dict], order: str, budget: int) -> dict:
    text_base = {r["job"]: steps_of(r, budget) for r in base if r["init"] == "text"}
    text_new = {r["job"]: steps_of(r, budget) for r in rerun if r["init"] == "text"}
    bank = {r["job"]: steps_of(r, budget) for r in stream if r["init"] == "bank" and r["order"] == order}
    same = sum(text_base[j] == text_new[j] for j in set(text_base) & set(text_new))
    return {
        "budget": budget,
        "order": order,
        # the same runs on two CPUs: > 1 where the rerun took fewer steps
        "text_rerun_vs_committed": {**paired(text_new, text_base), "identical_steps": same},
        "bank_vs_text_committed_cpu": paired(bank, text_base),
        "bank_vs_text_same_cpu": paired(bank, text_new),
    }


def report(out: dict[str, Any]) -> str:
    def row(name: str, p: dict[str, Any], a: str, b: str) -> str:
        return (
            f"| {name} | {p['n']} | {p['won']} / {p['tied']} / {p['lost']} | {p['sign_test_p']} | "
            f"{p['median_ratio']}x | {a} {p['steps_a']:.0f}, {b} {p['steps_b']:.0f} |"
        )

    t = out["text_rerun_vs_committed"]
    return "\n".join(
        [
            "# The same runs on two CPUs",
            "",
            "Written by `python benchmarks/bank_cross_cpu.py` (its docstring has the command). Steps to "
            f"target, a miss counting as the {out['budget']}-step budget; won / tied / lost: the first run "
            "took fewer / as many / more steps than the second.",
            "",
            "| pairs | jobs | won / tied / lost | sign test p | median ratio | steps in all |",
            "|---|---|---|---|---|---|",
            row("text init rerun vs committed text init", t, "rerun", "committed"),
            row(
                f"order {out['order']} bank vs committed text init",
                out["bank_vs_text_committed_cpu"],
                "bank",
                "text",
            ),
            row(
                f"order {out['order']} bank vs rerun text init (same CPU)",
                out["bank_vs_text_same_cpu"],
                "bank",
                "text",
            ),
            "",
            f"Identical steps to target on both CPUs: {t['identical_steps']} of {t['n']} text-init runs.",
            "",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, type=Path, help="the committed baselines' runs file")
    ap.add_argument("--rerun", required=True, type=Path, help="the baselines rerun on the other CPU")
    ap.add_argument(
        "--stream", required=True, type=Path, help="a bank run's runs file (its stream ran there)"
    )
    ap.add_argument("--order", default="1")
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    out = compare(read_runs(a.base), read_runs(a.rerun), read_runs(a.stream), a.order, a.budget)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(report(out))
    print(report(out))


if __name__ == "__main__":
    main()
