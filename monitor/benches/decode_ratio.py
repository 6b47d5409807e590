#!/usr/bin/env python3
"""`dqmon profile` against the bare decode of the same file (issue 17).

Generates peer-bench's events file once (../shared/peer-bench/gen_data.py;
10 columns, every one named by rules/peer-bench.yaml), then times whole
processes, interleaved, REPEATS rounds of:

  floor      dqmon-decode-floor FILE: every column decoded by the parquet
             crate into 8,192-row record batches, nothing else
  floor-dict the same, with the categorical columns read as dictionaries,
             as dqmon reads them
  dqmon      dqmon --threads T profile --config rules/peer-bench.yaml FILE
             (every column x every trust tag)

at 1 thread and at 2 (the floor splits row groups over its threads as
dqmon does), and prints the medians, the peak RSS of each (per process,
from wait4) and the ratios: dqmon / floor at 1 and at 2 threads, and
dqmon at 2 threads / dqmon at 1. The issue's goals: at most 1.5x the
floor on one thread, at most 0.6x the one-thread time on two cores.

Usage (a quiet machine, release builds):
  .tools/venv/bin/python monitor/benches/decode_ratio.py \\
      target/release/dqmon target/release/dqmon-decode-floor [--rows 5000000] [--repeats 3]
The venv (tests/run makes it) has the pyarrow and numpy the generator needs.
Not a test: it reports, it does not assert.
"""
import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import time

root = pathlib.Path(__file__).resolve().parents[2]

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("dqmon")
ap.add_argument("floor")
ap.add_argument("--rows", type=int, default=5_000_000)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--peer-bench", default=str(root.parent / "shared" / "peer-bench"))
ap.add_argument("--data", default=str(root / "target" / "decode-ratio"))
args = ap.parse_args()

data = pathlib.Path(args.data)
data.mkdir(parents=True, exist_ok=True)
file = data / f"events_{args.rows}.parquet"
if not file.exists():
    gen = pathlib.Path(args.peer_bench) / "gen_data.py"
    subprocess.run([sys.executable, str(gen), "--rows", str(args.rows), "--out", str(file)], check=True)
rules = root / "rules" / "peer-bench.yaml"
categorical = "country,device,merchant_category,trust_tag"


def timed(cmd):
    """Wall seconds and peak RSS (MiB) of one process."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        sys.exit(f"failed ({status}): {' '.join(cmd)}")
    return seconds, usage.ru_maxrss / 1024


commands = {}
for t in (1, 2):
    commands[f"floor t={t}"] = [args.floor, str(file), "--threads", str(t)]
    commands[f"floor-dict t={t}"] = [args.floor, str(file), "--threads", str(t), "--dictionary", categorical]
    commands[f"dqmon t={t}"] = [args.dqmon, "--threads", str(t), "profile", "--config", str(rules), "--json", str(file)]

results = {k: [] for k in commands}
for r in range(args.repeats):
    # a different order each round, so drift does not favour one command
    names = list(commands)
    names = names[r % len(names):] + names[: r % len(names)]
    for name in names:
        results[name].append(timed(commands[name]))

size = file.stat().st_size / (1024 * 1024)
print(f"{file.name}: {args.rows:,} rows, {size:.0f} MiB; median of {args.repeats}, interleaved")
med = {}
for name, runs in results.items():
    med[name] = statistics.median(s for s, _ in runs)
    rss = max(m for _, m in runs)
    print(f"  {name:<14} {med[name]:7.3f} s   peak RSS {rss:6.0f} MiB")
for t in (1, 2):
    print(f"dqmon / floor at {t} thread(s): {med[f'dqmon t={t}'] / med[f'floor t={t}']:.2f}x "
          f"(/ floor with dictionaries: {med[f'dqmon t={t}'] / med[f'floor-dict t={t}']:.2f}x)")
print(f"dqmon 2 threads / 1 thread: {med['dqmon t=2'] / med['dqmon t=1']:.2f}x")
