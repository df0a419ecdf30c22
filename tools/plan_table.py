"""Issue 28's check on the demo: the planned bit plan of a budget against the uniform widths of the same
budget and against random plans of the same budget, on the test split, before and after the default search.

    OMP_NUM_THREADS=1 python tools/plan_table.py --budget W4A3 --work DIR [--quantizer minmax] [--seeds 0-4]
                                                 [--jobs 2]

1. ``plan --budget B --seed 0`` (held-out only) writes DIR/plan.json; the plan is chosen once.
2. Per seed: ``search --plan DIR/plan.json --seed S`` and ``search --quantizer Q --bits B --seed S``, the
   default search; each reports its base (before) and refined (after) top-1 on test and on held-out.
3. The plan's random plans of the same budget (its ``random_plans``, drawn by the same allocator on random
   costs), each calibrated as a whole and scored on test: ``quantize --plan DIR/random_K.json``.

Every step is a real ``python -m engine`` subprocess; results go to DIR/results.json, and a rerun skips
the steps already there. The table printed at the end is the one in docs/diagnose.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.plan.file import BitPlan, load_plan, save_plan  # noqa: E402


def engine(args: list[str]) -> dict:
    """``python -m engine ARGS --json --quiet``: its JSON result; exits naming the command if it failed."""
    done = subprocess.run([sys.executable, "-m", "engine", *args, "--json", "--quiet"], capture_output=True,
                          text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"python -m engine {' '.join(args)} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def seeds(text: str) -> list[int]:
    """``0-4`` or ``0,2,3``."""
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(part) for part in text.split(",")]


def random_plan_files(plan_path: Path, work: Path) -> list[Path]:
    """Each of the plan's random plans as a plan file of its own (what ``--plan`` reads)."""
    plan = load_plan(plan_path)
    files = []
    for k, points in enumerate(plan.info["random_plans"]):
        random = BitPlan(plan.model, plan.quantizer, plan.w_bits, plan.a_bits, tuple(points.items()), plan.attn_bits,
                         plan.allow_float)
        files.append(save_plan(work / f"random_{k}.json", random))
    return files


def jobs_to_run(args: argparse.Namespace, plan_path: Path) -> dict[str, list[str]]:
    """Every engine command of the table, by the key its result is kept under."""
    work = args.work
    todo = {}
    for seed in args.seeds:
        todo[f"planned/{seed}"] = ["search", "--plan", str(plan_path), "--seed", str(seed),
                                   "--out", str(work / f"planned_s{seed}.h5")]
        todo[f"uniform/{seed}"] = ["search", "--quantizer", args.quantizer, "--bits", args.budget, "--seed", str(seed),
                                   "--out", str(work / f"uniform_s{seed}.h5")]
    for k, path in enumerate(random_plan_files(plan_path, work)):
        todo[f"random/{k}"] = ["quantize", "--plan", str(path), "--out", str(work / f"random_{k}.h5")]
    return todo


def table(results: dict, plan_info: dict, seed_list: list[int]) -> str:
    """Test top-1 per seed (before / after the default search), the means, and the random plans' mean."""
    lines = ["| seed | uniform before | uniform after | planned before | planned after | planned - uniform after |",
             "|---|---|---|---|---|---|"]
    for seed in seed_list:
        u, p = results[f"uniform/{seed}"], results[f"planned/{seed}"]
        lines.append(f"| {seed} | {u['base_top1']:.2f} | {u['refined_top1']:.2f} | {p['base_top1']:.2f} | "
                     f"{p['refined_top1']:.2f} | {p['refined_top1'] - u['refined_top1']:+.2f} |")

    def avg(kind: str, key: str) -> float:
        return mean(results[f"{kind}/{seed}"][key] for seed in seed_list)

    lines.append(f"| mean | {avg('uniform', 'base_top1'):.2f} | {avg('uniform', 'refined_top1'):.2f} | "
                 f"{avg('planned', 'base_top1'):.2f} | {avg('planned', 'refined_top1'):.2f} | "
                 f"{avg('planned', 'refined_top1') - avg('uniform', 'refined_top1'):+.2f} |")
    lines.append(f"| held-out mean | {avg('uniform', 'heldout_base_top1'):.2f} | "
                 f"{avg('uniform', 'heldout_refined_top1'):.2f} | {avg('planned', 'heldout_base_top1'):.2f} | "
                 f"{avg('planned', 'heldout_refined_top1'):.2f} | "
                 f"{avg('planned', 'heldout_refined_top1') - avg('uniform', 'heldout_refined_top1'):+.2f} |")
    randoms = [results[key]["quant_top1"] for key in sorted(results) if key.startswith("random/")]
    lines.append("")
    lines.append(f"Random plans of the same budget, calibrated, on test: {mean(randoms):.2f} (mean of {len(randoms)}: "
                 + " / ".join(f"{r:.1f}" for r in randoms) + "). The plan: mean "
                 f"W{plan_info['mean_w_bits']:.3f}A{plan_info['mean_a_bits']:.3f}, chosen in "
                 f"{plan_info['seconds']:.0f} s with {plan_info['measurements']} measurements.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", required=True, help="WxAy: the plan's budget and the uniform widths")
    parser.add_argument("--quantizer", default="minmax")
    parser.add_argument("--seeds", type=seeds, default=seeds("0-4"))
    parser.add_argument("--jobs", type=int, default=2, help="engine commands run at a time (one thread each)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the plan, the runs and results.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    plan_path = args.work / "plan.json"
    if not plan_path.exists():
        engine(["plan", "--budget", args.budget, "--quantizer", args.quantizer, "--seed", "0",
                "--out", str(plan_path), "--run-out", str(args.work / "plan.h5"), "--csv", str(args.work / "front.csv")])
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    todo = {key: command for key, command in jobs_to_run(args, plan_path).items() if key not in results}
    with ThreadPoolExecutor(args.jobs) as pool:
        running = {pool.submit(engine, command): key for key, command in todo.items()}
        for done in as_completed(running):
            key, result = running[done], done.result()
            results[key] = result
            results_path.write_text(json.dumps(results, indent=1))
            print(f"{key}: {json.dumps({k: v for k, v in result.items() if 'top1' in k})}", flush=True)
    print(table(results, load_plan(plan_path).info, args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
