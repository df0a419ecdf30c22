"""The 24 timm architectures of issue 25 end to end: ``quantize`` (minmax W8A8) then a one-pass ``search``,
each a real ``python -m engine`` subprocess on a random-init model, one model at a time.

    OMP_NUM_THREADS=1 python tools/model_table.py [--data FOLDER|synthetic] [--models NAME ...] [--write-docs]

Per model: the outcome of ``quantize`` (fully quantized, refused with its ``error:`` line, or a traceback)
and whether the one-pass search finished. Results go to ``--results`` (JSON, one entry per model, kept
between runs: a rerun skips the models already there unless ``--again``); ``--write-docs`` puts the table
into docs/models.md under its "End to end" heading (the page's text above the heading is kept).

Data: by default a generated ImageNet-style folder of 2 synset classes x 4 images (train: 4 calibration +
4 held-out, val: 8 test), written once. ``--data synthetic`` is the issue's command as typed, but its
built-in splits are 100 held-out and 100 test images: 12 minutes for DINOv2 at 518 px on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.commands.coverage import DOC_MODELS  # noqa: E402

MODELS = DOC_MODELS[3:]   # the 24 of issue 25 (the first three are the supported baselines)
DOCS = ROOT / "docs" / "models.md"
HEADING = "## End to end: quantize and a one-pass search"
QUANTIZE = ("quantize", "--quantizer", "minmax", "--bits", "W8A8", "--calib-size", "2", "--batch-size", "2",
            "--device", "cpu", "--json")
SEARCH = ("search", "--quantizer", "minmax", "--bits", "W8A8", "--calib-size", "4", "--batch-size", "4",
          "--device", "cpu", "--passes", "1", "--cycles", "1", "--children", "2", "--compile", "off", "--json")


def engine(args: list[str], timeout: float) -> dict:
    """Run ``python -m engine ARGS``: exit code, the JSON result, the error line or the traceback's last line."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"rc": None, "seconds": timeout, "error": f"timed out after {timeout:.0f} s"}
    out = {"rc": done.returncode, "seconds": round(time.perf_counter() - start, 1)}
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        try:
            out["result"] = json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    if "Traceback (most recent call last)" in done.stderr:
        out["traceback"] = done.stderr.strip().splitlines()[-1]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    if errors:
        out["error"] = errors[-1]
    return out


def small_folder(where: Path) -> Path:
    folder = where / "issue25-folder"
    if not (folder / "val").is_dir():
        subprocess.run([sys.executable, "-m", "engine", "make-folder", str(folder), "--classes", "2", "--per-class",
                        "4", "--size", "64", "--synsets"], check=True, cwd=ROOT, capture_output=True)
    return folder


def try_model(name: str, data: str, work: Path, timeout: float, search: bool) -> dict:
    entry: dict = {"model": name, "data": data}
    entry["quantize"] = engine([*QUANTIZE, "--model", name, "--data", data, "--out", str(work / f"{name}-q.h5")],
                               timeout)
    if search and entry["quantize"]["rc"] == 0:
        entry["search"] = engine([*SEARCH, "--model", name, "--data", data, "--out", str(work / f"{name}-s.h5")],
                                 timeout)
    return entry


def outcome(entry: dict) -> tuple[str, str]:
    q = entry["quantize"]
    if "traceback" in q:
        return "traceback", q["traceback"]
    if q["rc"] == 0:
        kept = (q.get("result") or {}).get("allow_float") or []
        return ("fully quantized" if not kept else "quantized, float kept on purpose"), ""
    if q["rc"] == 2 and "error" in q:
        return "refused (exit 2)", q["error"]
    return f"failed (exit {q['rc']})", q.get("error", "")


def measured(result: dict) -> str:
    if result.get("quality") == "feature_cosine":
        return f"feature cosine {result.get('quant_feature_cosine', result.get('refined_feature_cosine')):.2f}%"
    value = result.get("quant_top1", result.get("refined_top1"))
    return "" if value is None else f"top-1 {value:.2f}%"


def table(entries: list[dict]) -> str:
    rows = ["| model | quantize (minmax W8A8) | error line | one-pass search | measured (quantize; search: refined) |",
            "|---|---|---|---|---|"]
    for e in entries:
        kind, detail = outcome(e)
        s = e.get("search")
        if s is None:
            searched = "not run" if kind == "fully quantized" else "–"
        elif s["rc"] == 0:
            searched = f"ran ({s['seconds']:.0f} s)"
        else:
            searched = f"failed: {s.get('traceback') or s.get('error') or s['rc']}"
        values = [measured(e["quantize"].get("result") or {})]
        if s is not None and s.get("result"):
            values.append(measured(s["result"]))
        detail = detail.replace("|", "\\|")
        rows.append(f"| {e['model']} | {kind} | {detail} | {searched} | {'; '.join(v for v in values if v)} |")
    return "\n".join(rows)


def summary(entries: list[dict]) -> str:
    kinds = [outcome(e)[0] for e in entries]
    searched = sum(1 for e in entries if (e.get("search") or {}).get("rc") == 0)
    return (f"{len(entries)} models: {kinds.count('fully quantized')} fully quantized, "
            f"{sum(k.startswith('refused') for k in kinds)} refused with one error line, "
            f"{kinds.count('traceback')} tracebacks; {searched} ran the one-pass search")


def write_docs(entries: list[dict], data: str) -> None:
    text = DOCS.read_text()
    head = text.split(f"\n{HEADING}\n")[0].rstrip("\n")
    data_words = ("the built-in synthetic splits" if data == "synthetic" else
                  "a generated folder of 2 ImageNet synset classes x 4 images (`make-folder --classes 2 "
                  "--per-class 4 --size 64 --synsets`: 4 calibration + 4 held-out, 8 test images)")
    section = (f"{HEADING}\n\n"
               f"Each of the 24 models issue 25 was tried on, random init, through `python -m engine quantize "
               f"--model NAME --data DATA {' '.join(QUANTIZE[1:])} --out X.h5`, then (when it quantized) "
               f"`python -m engine search --model NAME --data DATA {' '.join(SEARCH[1:])} --out Y.h5`, on "
               f"{data_words}. A model without a classifier is measured by its features' cosine similarity to "
               f"the FP model instead of top-1; with random weights both say only that the pipeline ran, and the "
               f"times are from a 2-core machine shared with other work. Rerun with `OMP_NUM_THREADS=1 python tools/model_table.py "
               f"--again --write-docs`.\n\n{summary(entries)}.\n\n{table(entries)}\n")
    DOCS.write_text(f"{head}\n\n{section}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="default: the 24 of issue 25")
    parser.add_argument("--data", default=None, help="a folder, or 'synthetic' (default: a small generated folder)")
    parser.add_argument("--results", type=Path, default=Path(tempfile.gettempdir()) / "cptv-model-table.json")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cptv-model-table")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per command")
    parser.add_argument("--no-search", action="store_true")
    parser.add_argument("--again", action="store_true", help="rerun models already in --results")
    parser.add_argument("--write-docs", action="store_true", help="put the table into docs/models.md")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data or str(small_folder(args.work))
    done = json.loads(args.results.read_text()) if args.results.exists() and not args.again else {}
    for name in args.models:
        if name in done:
            continue
        done[name] = try_model(name, data, args.work, args.timeout, not args.no_search)
        args.results.write_text(json.dumps(done, indent=1))
        print(table([done[name]]).splitlines()[-1], flush=True)
    entries = [done[name] for name in args.models if name in done]
    print(summary(entries))
    if args.write_docs:
        write_docs(entries, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
