"""Soak test (issue 11): many clients for a long while through every way in, with bad inputs mixed
in; the server's memory, latency, errors, and whether its /metrics counts what the clients saw.

    python bench/soak.py [--clients 32] [--seconds 600] [--workers 1] [--seed 0] [--json out.json]
    python bench/soak.py --url http://127.0.0.1:8000 [--pid PID]    # a server already running

It starts a server of the bundled model repository (or targets `--url`; give its `--pid` to
measure its memory). `--clients` asyncio clients in this one process, each over a keep-alive
connection of its own, send requests with every non-empty subset of the digits model's
modalities: as `/v1/predict` JSON, as multipart form data to `/v1/models/digits/predict`, and as
Open Inference Protocol JSON to `/v2/models/digits/infer`; 5% of them have a bad input or option
(`bench/soak_cases.py` lists them, with the status each must get). Every body is built once; the
seed fixes the sequence of choices. Before the clock starts, every body is sent once, one at a
time, to check every expectation.

It reports requests per second, p50 and p99 latency, the client's CPU time per request, the
answers by status code (and connection errors), answers other than expected, the server's
resident memory (summed over its processes) after 1 minute (half the run if shorter than 2
minutes) and at the end, and whether the server's `anymodal_requests_total` (by route and code)
and `anymodal_inputs_total` (by modality and state) grew by exactly what the clients saw: good
inputs as the answers report them (present, or unreliable), bad ones as expected. Against a server
that other clients use too, the counts cannot agree. Goals: no 5xx nor connection errors, every
answer as expected, memory growth under 5%, equal counts; the exit code is 1 if one is not met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.soak_cases import PROTOCOLS, Case, build  # noqa: E402
from bench.soak_server import Counts, compare, counts, rss_mb, start, watch_memory  # noqa: E402

MODEL = "digits"
BAD_SHARE = 0.05
RSS_GROWTH_GOAL = 5.0  # percent
ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)


@dataclass
class Tally:
    """What the clients saw: requests by (route, code), inputs by (modality, state) as the service
    must have counted them, answers by code or connection error, unexpected answers, latencies."""

    requests: Counts = field(default_factory=Counter)
    inputs: Counts = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PROTOCOLS})
    seconds: float = 0.0  # how long it ran
    cpu_seconds: float = 0.0  # CPU time the client process spent meanwhile

    async def send(self, client: httpx.AsyncClient, case: Case) -> None:
        started = time.perf_counter()
        try:
            answer = await client.post(case.path, content=case.body, headers=case.headers)
        except httpx.TransportError as error:
            self.answers[f"connection error ({type(error).__name__})"] += 1
            return
        self.latencies[case.protocol].append(time.perf_counter() - started)
        code = answer.status_code
        self.answers[str(code)] += 1
        self.requests[(case.route, str(code))] += 1
        states, problem = case.counted(code, answer.content)
        if problem is not None:
            self.unexpected[f"{case.protocol} {case.name}: {problem}"] += 1
        for modality, state in (states or {}).items():
            self.inputs[(modality, state)] += 1


async def soak(url: str, clients: int, seconds: float, seed: int, pid: int | None) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        info = (await client.get(f"/v1/models/{MODEL}")).raise_for_status().json()
        good, bad = build(MODEL, info["modalities"])
        routes = {case.route for case in good}
        before = counts(await scrape(client), MODEL, routes)
        check = Tally()
        for case in good + bad:  # stopping at the first request without an answer
            await check.send(client, case)
            if check.requests.total() < check.answers.total():
                raise RuntimeError(f"no answer to {case.protocol} {case.name}: {dict(check.answers)}")
        tally, rng = Tally(), random.Random(seed)
        rss: list[tuple[float, float]] = []  # (seconds into the soak, MB)
        started, cpu = time.perf_counter(), time.process_time()
        stop = started + seconds

        async def run_client() -> None:
            # a pool of its own: one shared by all the clients costs twice the CPU per request
            async with httpx.AsyncClient(base_url=url, limits=ONE_CONNECTION, timeout=60) as own:
                while time.perf_counter() < stop:
                    await tally.send(own, rng.choice(bad) if rng.random() < BAD_SHARE else rng.choice(good))

        watch = asyncio.create_task(watch_memory(pid, min(60.0, seconds / 2), started, rss))
        await asyncio.gather(*(run_client() for _ in range(clients)))
        tally.seconds, tally.cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        watch.cancel()
        if pid is not None:
            rss.append((round(tally.seconds, 1), rss_mb(pid)))
        seen = (check.requests + tally.requests, check.inputs + tally.inputs)
        for _ in range(3):  # the server counts a request just after answering it
            after = counts(await scrape(client), MODEL, routes)
            differences = [compare(s, a - b) for s, a, b in zip(seen, after, before, strict=True)]
            if not any(differences):
                break
            await asyncio.sleep(0.5)
    return results(clients, seconds, seed, (len(good), len(bad)), check, tally, rss, seen, differences)


async def scrape(client: httpx.AsyncClient) -> str:
    return (await client.get("/metrics")).raise_for_status().text


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def results(
    clients: int,
    seconds: float,
    seed: int,
    cases: tuple[int, int],
    check: Tally,
    tally: Tally,
    rss: list[tuple[float, float]],
    seen: tuple[Counts, Counts],
    differences: list[list[str]],
) -> dict[str, Any]:
    every = [x for values in tally.latencies.values() for x in values]
    answers = check.answers + tally.answers
    growth = 100 * (rss[-1][1] / rss[0][1] - 1) if len(rss) > 1 else None
    goals = {
        "no 5xx, no connection errors": all(code.isdigit() and int(code) < 500 for code in answers),
        "every answer as expected": not (check.unexpected + tally.unexpected),
        f"memory growth < {RSS_GROWTH_GOAL:g}%": None if growth is None else growth < RSS_GROWTH_GOAL,
        "/metrics counts equal the clients'": not any(differences),
    }
    return {
        "clients": clients,
        "seconds": seconds,
        "seed": seed,
        "cases": {"good": cases[0], "bad": cases[1]},
        "check_pass": {"requests": check.answers.total(), "unexpected": dict(check.unexpected)},
        "requests": tally.answers.total(),
        "per_second": tally.answers.total() / tally.seconds,
        "client_cpu_ms_per_request": 1000 * tally.cpu_seconds / max(1, tally.answers.total()),
        "p50_ms": 1000 * percentile(every, 50),
        "p99_ms": 1000 * percentile(every, 99),
        "by_protocol": {
            p: {"requests": len(v), "p50_ms": 1000 * percentile(v, 50), "p99_ms": 1000 * percentile(v, 99)}
            for p, v in tally.latencies.items()
        },
        "answers": dict(sorted(answers.items())),
        "unexpected": dict((check.unexpected + tally.unexpected).most_common()),
        "rss_mb": rss,
        "rss_growth_percent": growth,
        "client_counts": {
            "requests": {" ".join(key): n for key, n in sorted(seen[0].items())},
            "inputs": {" ".join(key): n for key, n in sorted(seen[1].items())},
        },
        "count_differences": {"requests": differences[0], "inputs": differences[1]},
        "goals": goals,
    }


def report(result: dict[str, Any]) -> None:
    cases, check = result["cases"], result["check_pass"]
    print(f"{result['clients']} clients, {result['seconds']:g} s, seed {result['seed']}, {os.cpu_count()}"
          f" cores; {cases['good']} good and {cases['bad']} bad bodies, {BAD_SHARE:.0%} bad;"
          f" check pass (every body once): {len(check['unexpected'])} unexpected")  # fmt: skip
    print(f"soak: {result['requests']} requests, {result['per_second']:.1f}/s;"
          f" p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms;"
          f" client CPU {result['client_cpu_ms_per_request']:.2f} ms per request")  # fmt: skip
    for protocol, numbers in result["by_protocol"].items():
        print(f"  {protocol:10} {numbers['requests']:>8} requests  p50 {numbers['p50_ms']:7.1f} ms"
              f"  p99 {numbers['p99_ms']:7.1f} ms")  # fmt: skip
    print("answers by status: " + ", ".join(f"{code}: {n}" for code, n in result["answers"].items()))
    for what, n in list(result["unexpected"].items())[:10]:
        print(f"  unexpected, {n}x: {what}")
    rss = result["rss_mb"]
    if len(rss) > 1:
        print(f"server RSS: {rss[0][1]:.1f} MB at {rss[0][0]:g} s, {rss[-1][1]:.1f} MB at the end"
              f" ({rss[-1][0]:g} s): {result['rss_growth_percent']:+.2f}%")  # fmt: skip
    for what, differences in result["count_differences"].items():
        print(f"/metrics {what}: " + ("equal to the clients' counts" if not differences else "differ"))
        for difference in differences:
            print(f"  {difference}")
    print("goals:")
    for goal, met in result["goals"].items():
        print(f"  {goal:38} {'not measured' if met is None else 'met' if met else 'NOT MET'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="Worker processes of the server started")
    parser.add_argument("--url", help="Soak this running server instead of starting one")
    parser.add_argument("--pid", type=int, help="With --url: the server's process, to measure its memory")
    parser.add_argument("--json", type=Path, help="Also write the results here")
    args = parser.parse_args()
    log: list[str] = []
    if args.url:
        result = asyncio.run(soak(args.url, args.clients, args.seconds, args.seed, args.pid))
    else:
        server = start(args.workers)
        try:
            result = asyncio.run(soak(server.url, args.clients, args.seconds, args.seed, server.process.pid))
        finally:
            server.stop()
            log = server.output().splitlines()[-20:]
        result["workers"] = args.workers
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if any(met is False for met in result["goals"].values()):
        if log:
            print("the server's last log lines:\n  " + "\n  ".join(log))
        sys.exit(1)


if __name__ == "__main__":
    main()
