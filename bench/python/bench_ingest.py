"""Times the Python baseline on the benchmark's events: json.loads of the
event text, then everything ingest does before the network. Prints one JSON
object per event: {"name", "readings", "ns_per_reading", "runs"}.

usage: bench_ingest.py NOW_MS NAME=EVENT_FILE[:READINGS] ...
"""

import json
import statistics
import sys
import time

import ingest_baseline


def measure(text: str, now_ms: int, expected: int) -> tuple[float, int]:
    # Check the work is real: every reading of the event becomes an item.
    _, requests, batch = ingest_baseline.transform(json.loads(text), now_ms)
    stored = sum(len(r[ingest_baseline.TABLE]) for r in requests)
    if stored != expected or batch.rejected:
        sys.exit(f"baseline stored {stored} of {expected} readings; rejected {batch.rejected[:3]}")
    # Repeat until about 2 s are spent (at least 3 runs); report the median.
    times, spent = [], 0.0
    while len(times) < 3 or (spent < 2.0 and len(times) < 200):
        started = time.perf_counter_ns()
        ingest_baseline.transform(json.loads(text), now_ms)
        elapsed = time.perf_counter_ns() - started
        times.append(elapsed)
        spent += elapsed / 1e9
    return statistics.median(times) / expected, len(times)


def main() -> None:
    now_ms = int(sys.argv[1])
    for argument in sys.argv[2:]:
        name, spec = argument.split("=", 1)
        path, readings = spec.rsplit(":", 1)
        with open(path, encoding="utf-8") as file:
            text = file.read()
        ns, runs = measure(text, now_ms, int(readings))
        print(json.dumps({"name": name, "readings": int(readings), "ns_per_reading": ns, "runs": runs}), flush=True)


if __name__ == "__main__":
    main()
