"""Two runs of the service stream (or of the novel-task phase) side by side, job by job.

Reads the ``bank_stream.json`` that ``bank_stream.py --summarize`` writes for each (the committed one and a
variant's), pairs their jobs (stream: the same order and position, hence the same job, data, seed, target
and baselines; novel: the same job) and writes a table: per group the median and geometric-mean steps
ratios against random and text init, the CPU-time ratio with selection, the chain counts, and the paired
verdict (the variant's steps against the committed run's, job by job: won / tied / lost, and a two-sided
sign test over the untied pairs).  A miss counts as the step budget, as in ``bank_stream.py``.

    python benchmarks/bank_stream_compare.py \\
        --base benchmarks/results/bank_stream.json \\
        --variant benchmarks/results/bank_stream_near/bank_stream.json \\
        --out benchmarks/results/bank_stream_near/compare.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any


def sign_test(won: int, lost: int) -> float:
    """Two-sided p of ``won`` against ``lost`` under a fair coin (ties dropped)."""
    n = won + lost
    if n == 0:
        return 1.0
    k = min(won, lost)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * p)


def steps(row: dict[str, Any], budget: int) -> float:
    s = row.get("bank_steps")
    return float(budget if s is None else max(s, 1))


def paired(base: list[dict[str, Any]], var: list[dict[str, Any]], budget: int, key: Any) -> dict[str, Any]:
    b = {key(r): r for r in base}
    pairs = [(b[key(r)], r) for r in var if key(r) in b]
    ratios = [steps(x, budget) / steps(y, budget) for x, y in pairs]  # > 1: the variant took fewer steps
    return {
        **counts(ratios),
        "steps_base": sum(steps(x, budget) for x, _ in pairs),
        "steps_variant": sum(steps(y, budget) for _, y in pairs),
    }


def counts(ratios: list[float]) -> dict[str, Any]:
    """Paired ratios (> 1: a win): won / tied / lost, the sign test, their median and geometric mean."""
    won = sum(r > 1 for r in ratios)
    lost = sum(r < 1 for r in ratios)
    return {
        "n": len(ratios),
        "won": won,
        "tied": len(ratios) - won - lost,
        "lost": lost,
        "sign_test_p": round(sign_test(won, lost), 3),
        "median_ratio": round(statistics.median(ratios), 3) if ratios else None,
        "gmean_ratio": round(math.exp(statistics.fmean(math.log(r) for r in ratios)), 3) if ratios else None,
    }


def cell(d: dict[str, Any] | None) -> str:
    if not d or not d.get("n"):
        return "n/a"
    return f"{d['median']:.2f}x (gmean {d['gmean']:.2f}x, n={d['n']})"


def compare(
    base: dict[str, Any], var: dict[str, Any], base_name: str, var_name: str
) -> tuple[dict[str, Any], str]:
    budget = int(base["settings"]["max_steps"])
    out: dict[str, Any] = {"budget": budget, "groups": {}}
    lines = [
        f"# {var_name} against {base_name}, job by job",
        "",
        "Written by `python benchmarks/bank_stream_compare.py` from the two `bank_stream.json` files "
        f"(`{base_name}`, `{var_name}`). Ratios: baseline steps / bank steps (a miss counts as the "
        f"{budget}-step budget); *paired*: the committed run's steps / the variant's on the same job "
        "(> 1: the variant took fewer), won/tied/lost and a two-sided sign test over the untied pairs.",
        "",
        "| jobs | run | steps vs random | steps vs text | CPU time vs random (selection incl.) | "
        "same-task entry in bank / probed / chosen | raced |",
        "|---|---|---|---|---|---|---|",
    ]
    rows_b, rows_v = base.get("rows", []), var.get("rows", [])
    groups = {
        "all": lambda r: True,
        "first_of_task": lambda r: r["first_of_task"],
        "repeat": lambda r: not r["first_of_task"],
    }
    for g, keep in groups.items():
        for name, run in ((base_name, base), (var_name, var)):
            if not run.get("rows"):
                continue
            c = run.get("chain", {}).get(g, {})
            chain = (
                f"{c.get('same_task_in_bank', '-')} / {c.get('same_task_probed', '-')} / "
                f"{c.get('same_task_chosen', '-')}"
                if c
                else "-"
            )
            raced = c.get("raced", "-") if c else "-"
            d = run[g]
            lines.append(
                f"| {g.replace('_', ' ')} | {name} | {cell(d['ratio_vs_random'])} | "
                f"{cell(d['ratio_vs_text'])} | {cell(d['wall_ratio_vs_random'])} | {chain} | {raced} |"
            )
        if rows_b and rows_v:
            p = paired(
                [r for r in rows_b if keep(r)],
                [r for r in rows_v if keep(r)],
                budget,
                lambda r: (r["order"], r["job"]),
            )
            out["groups"][g] = p
    orders = sorted({r["order"] for r in rows_b} & {r["order"] for r in rows_v})
    if len(orders) > 1:  # each order on its own as well: does a difference hold in both?
        for o in orders:
            out["groups"][f"order {o}"] = paired(
                [r for r in rows_b if r["order"] == o],
                [r for r in rows_v if r["order"] == o],
                budget,
                lambda r: (r["order"], r["job"]),
            )
    if out["groups"]:
        lines += [
            "",
            "| jobs | paired: won / tied / lost | sign test p | median, gmean of the paired ratio | "
            "steps in all (committed -> variant) |",
            "|---|---|---|---|---|",
        ]
        for g, p in out["groups"].items():
            lines.append(
                f"| {g.replace('_', ' ')} | {p['won']} / {p['tied']} / {p['lost']} (n={p['n']}) | "
                f"{p['sign_test_p']} | {p['median_ratio']}x, {p['gmean_ratio']}x | "
                f"{p['steps_base']:.0f} -> {p['steps_variant']:.0f} |"
            )
    nb, nv = base.get("novel_rows", []), var.get("novel_rows", [])
    if nb and nv:
        p = paired(nb, nv, budget, lambda r: r["job"])
        out["novel"] = p
        lines += [
            "",
            "## Novel task",
            "",
            "| run | steps vs random | steps vs text | CPU time vs random | worse than the better baseline "
            "by more than the race |",
            "|---|---|---|---|---|",
        ]
        for name, run in ((base_name, base), (var_name, var)):
            nt = run["novel_task"]
            worse = nt["worse_than_better_baseline_by_more_than_the_race"]
            lines.append(
                f"| {name} | {cell(nt['ratio_vs_random'])} | {cell(nt['ratio_vs_text'])} | "
                f"{cell(nt['wall_ratio_vs_random'])} | {len(worse)} of {nt['ratio_vs_random']['n']} |"
            )
        lines += [
            "",
            f"Paired, job by job: won / tied / lost {p['won']} / {p['tied']} / {p['lost']} (n={p['n']}), "
            f"sign test p {p['sign_test_p']}; median paired ratio {p['median_ratio']}x, gmean "
            f"{p['gmean_ratio']}x; steps in all {p['steps_base']:.0f} -> {p['steps_variant']:.0f}.",
        ]
    return out, "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the committed run's bank_stream.json")
    ap.add_argument("--variant", required=True, help="the variant's bank_stream.json")
    ap.add_argument("--out", required=True, help="the table (.md); a .json of the paired figures beside it")
    args = ap.parse_args()
    base, var = (json.loads(Path(p).read_text()) for p in (args.base, args.variant))
    out, md = compare(base, var, args.base, args.variant)
    Path(args.out).write_text(md)
    Path(args.out).with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    print(md)


if __name__ == "__main__":
    main()
