"""Speed, measured against the peers: anymodal and what one would serve the model with otherwise,
side by side in one run, on the same 3-modality request (bench/loadgen.py), with the same client.

    python bench/peers.py [--seconds 10] [--only name,name] [--json out.json] [--repository models]

One at a time (never two loaded at once), each on free loopback ports:
  inprocess              anymodal's pipeline, `Predictor.predict` in a loop: no HTTP (bench/floors.py)
  onnxruntime            the encoders and the head on pre-decoded features: the floor
  anymodal-1, -2         `anymodal serve` with 1 or 2 workers, dynamic batching on (the default)
  anymodal-1-unbatched,  the same with ANYMODAL_BATCHING=0
  anymodal-2-unbatched
  naive-1, -2            bench/naive_server.py (FastAPI + onnxruntime, the same work, no batching)
                         under uvicorn with 1 or 2 workers
  mlserver-1, -2         MLServer with bench/mlserver_runtime.py (the same work), from its own
                         virtual environment, bench/.venv-mlserver, made on first use:
                         parallel_workers 0 (one process) or 1 (its default: an inference
                         process beside the HTTP one, two processes)
`--only` takes names or their prefixes (`--only anymodal,naive-1`).

For each: p50 and p99 latency at concurrency 1; throughput at concurrency 1, 8 and 32; CPU time
per request (user + system of the server's process tree over the c=32 run, divided by the
requests it served; the floors' own process); resident memory (summed over the tree, after the
load); and the seconds from start to ready. Then the goals of issue 11, met or not.

Load comes from wrk with a Lua script (Debian package `wrk`): a C client leaves the cores to the
servers. Without it an asyncio client in this process stands in, and its numbers are lower bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import peer_servers
from loadgen import ROOT, Load, load_generator, tree_cpu_seconds, tree_rss_mb
from peer_servers import Running

LEVELS = (1, 8, 32)
Start = Callable[[], AbstractContextManager[Running]]


def floor(kind: str, repository: Path, seconds: float) -> dict:
    """bench/floors.py in a process of its own, so that it holds no model while servers run."""
    command = [sys.executable, str(ROOT / "bench" / "floors.py"), kind, "--repository", str(repository)]
    command += ["--seconds", str(seconds), "--concurrency", ",".join(map(str, LEVELS))]
    done = subprocess.run([*command, "--since", repr(time.time())], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def answer_label(answer: dict) -> str:
    """The label of a `/v1/predict` answer or of an Open Inference Protocol one."""
    if "label" in answer:
        return answer["label"]
    return next(o["data"][0] for o in answer["outputs"] if o["name"] == "label")


def measure(running: Running, load: Load, seconds: float) -> dict:
    answer = httpx.post(running.url, content=running.body, headers={"content-type": "application/json"})
    answer.raise_for_status()
    if answer_label(answer.json()) != "7":
        raise RuntimeError(f"answered {answer.text[:300]}, not the label 7")
    load(running.url, running.body, 4, min(2.0, seconds))  # warm up
    result: dict = {"ready_seconds": running.ready_seconds}
    for concurrency in LEVELS:
        before = tree_cpu_seconds(running.pid)
        run = load(running.url, running.body, concurrency, seconds)
        run["cpu_ms"] = 1000 * (tree_cpu_seconds(running.pid) - before) / max(1, run["requests"])
        result[f"c{concurrency}"] = run
    return result | {"rss_mb": tree_rss_mb(running.pid)}


def servers(repository: Path, mlserver: Path | None) -> Iterator[tuple[str, int, Start]]:
    """(name, processes that serve, how to start it) of every server."""
    for workers in (1, 2):
        for batching in (True, False):
            name = f"anymodal-{workers}" + ("" if batching else "-unbatched")
            yield name, workers, lambda w=workers, b=batching: peer_servers.anymodal(repository, w, b)
    for workers in (1, 2):
        yield f"naive-{workers}", workers, lambda w=workers: peer_servers.naive(repository, w)
    if mlserver is not None:
        for processes in (1, 2):
            yield (
                f"mlserver-{processes}",
                processes,
                lambda p=processes: peer_servers.mlserver(repository, mlserver, p - 1),
            )


def selected(name: str, only: list[str] | None) -> bool:
    return only is None or any(name == o or name.startswith(f"{o}-") for o in only)


def run_all(args: argparse.Namespace) -> dict:
    only = args.only.split(",") if args.only else None
    client, load = load_generator()
    print(f"machine: {os.cpu_count()} cores; client: {client}; {args.seconds:g} s per measurement")
    results: dict = {"client": client, "seconds": args.seconds, "peers": {}}
    peers = results["peers"]
    for kind, name in (("pipeline", "inprocess"), ("onnxruntime", "onnxruntime")):
        if selected(name, only):
            print(f"measuring {name} ...", flush=True)
            try:
                peers[name] = floor(kind, args.repository, args.seconds) | {"processes": 1}
            except RuntimeError as error:
                print(f"  {name} failed: {error}")
                peers[name] = {"error": str(error), "processes": 1}
    executable = None
    if any(selected(f"mlserver-{n}", only) for n in (1, 2)):
        executable, about = peer_servers.mlserver_install()
        results["mlserver"] = about
        print(f"MLServer {about}" if executable else f"MLServer skipped: {about}")
    for name, processes, start in servers(args.repository, executable):
        if not selected(name, only):
            continue
        print(f"measuring {name} ...", flush=True)
        try:
            with start() as running:
                peers[name] = measure(running, load, args.seconds) | {"processes": processes}
        except (RuntimeError, TimeoutError, httpx.HTTPError, subprocess.CalledProcessError) as error:
            print(f"  {name} failed: {error}")
            peers[name] = {"error": str(error), "processes": processes}
    return results


def table(results: dict) -> str:
    columns = ["processes", "p50 ms c=1", "p99 ms c=1", "req/s c=1", "req/s c=8", "req/s c=32"]
    columns += ["CPU ms/req", "RSS MB", "ready s"]
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, peer in results["peers"].items():
        if "error" in peer:
            lines.append(f"| {name} | {peer['processes']} | failed: {peer['error'][:100]} |")
            continue
        c1, c8, c32 = peer["c1"], peer["c8"], peer["c32"]
        cells = [peer["processes"], f"{c1['p50_ms']:.2f}", f"{c1['p99_ms']:.2f}", f"{c1['rps']:.0f}"]
        cells += [f"{c8['rps']:.0f}", f"{c32['rps']:.0f}", f"{c32['cpu_ms']:.2f}", f"{peer['rss_mb']:.0f}"]
        cells += [f"{peer['ready_seconds']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def goals(results: dict) -> list[dict]:
    """Issue 11's goals, each with its value (None where a server it needs was not measured)."""
    peers = {n: p for n, p in results["peers"].items() if "error" not in p}

    def get(name: str, level: str, key: str) -> float | None:
        return peers[name][level][key] if name in peers else None

    def ratio(a: str, b: str, level: str, key: str) -> float | None:
        x, y = get(a, level, key), get(b, level, key)
        return None if x is None or y is None else x / y

    rows = [
        ("CPU ms per request, anymodal-1", get("anymodal-1", "c32", "cpu_ms"), "<=", 0.8),
        ("req/s c=32, anymodal-1 / inprocess", ratio("anymodal-1", "inprocess", "c32", "rps"), ">=", 0.8),
    ]
    for n in (1, 2):
        for peer, target in (("naive", 2.0), ("mlserver", 1.0)):
            rows.append(
                (
                    f"req/s c=32, anymodal-{n} / {peer}-{n}",
                    ratio(f"anymodal-{n}", f"{peer}-{n}", "c32", "rps"),
                    ">=",
                    target,
                )
            )
    rows.append(
        ("p50 c=1, anymodal-1 / inprocess", ratio("anymodal-1", "inprocess", "c1", "p50_ms"), "<=", 1.3)
    )
    return [
        {
            "goal": goal,
            "value": value,
            "target": f"{op} {target:g}",
            "met": None if value is None else (value <= target if op == "<=" else value >= target),
        }
        for goal, value, op, target in rows
    ]


def report(results: dict) -> None:
    print(f"\n3-modality request (image + audio + text); client: {results['client']}\n")
    print(table(results))
    measured = {n: p for n, p in results["peers"].items() if "error" not in p}
    errors = {n: sum(p[f"c{c}"]["errors"] for c in LEVELS) for n, p in measured.items()}
    if any(errors.values()):
        print("\nfailed requests, counted in req/s: " + ", ".join(f"{n} {e}" for n, e in errors.items() if e))
    print(
        "\nanymodal-N: N workers, dynamic batching on (the default). mlserver-1: parallel_workers 0;"
        " mlserver-2: parallel_workers 1 (an HTTP process and an inference process).\n\ngoals of issue 11:"
    )
    for row in results["goals"]:
        value = "not measured" if row["value"] is None else f"{row['value']:.3f}"
        verdict = {None: "-", True: "met", False: "NOT MET"}[row["met"]]
        print(f"- {row['goal']}: {value} (goal {row['target']}): {verdict}")
    print(f"\ntook {results['wall_seconds']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "models")
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each measurement")
    parser.add_argument("--only", help="Comma-separated names (or prefixes) of what to measure")
    parser.add_argument("--json", type=Path, help="Also write the results here")
    args = parser.parse_args()
    started = time.perf_counter()
    results = run_all(args)
    results["goals"] = goals(results)
    results["wall_seconds"] = time.perf_counter() - started
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
