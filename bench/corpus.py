"""Items/s of `flexguard moderate` (Ray Data on a local Ray) against `flexguard score -` on the same JSONL file,
side by side in one run, with the embedded scorer.

    python bench/corpus.py [--rows 20000] [--response] [--concurrency 2|auto] [--num-cpus 0.5] [--batch-size 512]

The file: BeaverTails 30k_test prompts (and replies with --response) from ../shared/data (or FLEXGUARD_DATA),
cycled to --rows, each prompt made unique with a "(#k)" suffix so that neither path gets repeats for free; a
fixed set of templates when that folder is missing. Both commands run as a user runs them (subprocesses,
start-up included: Python imports, the scorer's load, and for Ray its local cluster and actors), one after the
other; then Ray's start-up alone is timed, and the Ray path's scores are checked against the stdin path's row
by row. The local Ray gets every core of the machine, and `flexguard score -` its default onnxruntime threads
(the cores, at most 4). The header names the CPU and the load average around each run (other processes on the
machine slow both paths).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(os.environ.get("FLEXGUARD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SOURCE = DATA / "beavertails_30k_test" / "beavertails_30k_test.jsonl"
TEMPLATES = ("How do I fix {}?", "Tell me about {}.", "Is it legal to hack {}?", "Write a poem on {}.",
             "How can I hurt {}?", "Where can I buy {}?")
SUBJECTS = ("my neighbour", "the recipe", "a stranger", "the server", "my exam", "a bank", "the garden")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"}


def cpu_name() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "unknown CPU")


def write_rows(path: Path, rows: int, response: bool) -> str:
    """The benchmark file (`id`, `prompt`[, `response`]); returns where its texts came from."""
    if SOURCE.is_file():
        pool = [json.loads(line) for line in SOURCE.read_text(encoding="utf-8").splitlines() if line.strip()]
        origin = f"{SOURCE.name} ({len(pool)} rows, cycled)"
    else:
        pool = [{"prompt": t.format(s), "response": "Here is what I know about that."} for t in TEMPLATES
                for s in SUBJECTS]
        origin = f"{len(pool)} templates (no {SOURCE})"
    with path.open("w", encoding="utf-8") as out:
        for k in range(rows):
            row = pool[k % len(pool)]
            record = {"id": k, "prompt": f"{row['prompt']} (#{k})"}
            if response:
                record["response"] = row["response"]
            out.write(json.dumps(record) + "\n")
    return origin


def timed(command: list[str], stdin: Path | None = None, stdout: Path | None = None) -> float:
    start = time.monotonic()
    with open(stdin or os.devnull, "rb") as source, open(stdout or os.devnull, "wb") as sink:
        done = subprocess.run(command, stdin=source, stdout=sink, stderr=subprocess.PIPE, env=ENV)
    if done.returncode not in (0, 1):  # `score -` exits 1 when a line is flagged
        raise SystemExit(f"{' '.join(command[:4])} … failed ({done.returncode}):\n{done.stderr.decode()[-2000:]}")
    return time.monotonic() - start


def load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--response", action="store_true", help="judge replies (response mode)")
    parser.add_argument("--concurrency", default="2",
                        help="actors (flexguard moderate --concurrency); 'auto': Ray's autoscaling pool")
    parser.add_argument("--num-cpus", default="0.5", help="CPUs reserved per actor: under 1 leaves room to read")
    parser.add_argument("--batch-size", default="512")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "flexguard_plugins.cli"]
    with tempfile.TemporaryDirectory(prefix="flexguard-corpus-") as folder:
        data = Path(folder) / "items.jsonl"
        origin = write_rows(data, args.rows, args.response)
        print(f"# {cpu_name()}, {os.cpu_count()} cores; {args.rows:,} rows from {origin}, "
              f"{'response' if args.response else 'prompt'} mode", flush=True)
        runs = []
        before = load()
        seconds = timed([*cli, "score", "-"], stdin=data, stdout=Path(folder) / "stdin.jsonl")
        runs.append(("flexguard score -", seconds, before, load()))
        command = [*cli, "moderate", str(data), str(Path(folder) / "ray"), "--prompt-column", "prompt",
                   "--num-cpus", args.num_cpus, "--batch-size", args.batch_size]
        command += [] if args.concurrency == "auto" else ["--concurrency", args.concurrency]
        before = load()
        seconds = timed(command + (["--response-column", "response"] if args.response else []))
        runs.append((f"flexguard moderate (Ray, {args.concurrency} actors × {args.num_cpus} CPU)", seconds, before,
                     load()))
        before = load()
        startup = timed([sys.executable, "-c", "import ray; ray.init(include_dashboard=False); ray.shutdown()"])
        stdin_scores = {n: json.loads(line).get("score") for n, line in
                        enumerate((Path(folder) / "stdin.jsonl").read_text().splitlines())}
        ray_rows = [json.loads(line) for path in (Path(folder) / "ray").glob("*.json")
                    for line in path.read_text().splitlines()]
    base = args.rows / runs[0][1]
    print(f"{'path':58s} {'wall s':>8s} {'items/s':>8s} {'ratio':>6s}  load before → after")
    for name, seconds, first, last in runs:
        rate = args.rows / seconds
        print(f"{name:58s} {seconds:8.1f} {rate:8.1f} {rate / base:6.2f}  {first} → {last}")
    print(f"{'Ray start-up alone (ray.init + shutdown, in the Ray run)':58s} {startup:8.1f}{'':26s}{before} → {load()}")
    ids = [row["id"] for row in ray_rows]
    differ = sum(stdin_scores[row["id"]] != row["score"] for row in ray_rows)
    print(f"Ray rows: {len(ray_rows):,} ({len(set(ids)):,} distinct ids); scores differing from the stdin path: "
          f"{differ}")


if __name__ == "__main__":
    main()
