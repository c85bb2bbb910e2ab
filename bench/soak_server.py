"""The server side of the soak (bench/soak.py): starting one and reading its log as it comes, its
resident memory, and the counts of its /metrics page."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Collection
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.live import MODELS, LiveServer

Counts = Counter[tuple[str, str]]


def counts(text: str, model: str, routes: Collection[str]) -> tuple[Counts, Counts]:
    """A model's requests by (route, code) on `routes`, and its inputs by (modality, state)."""
    requests: Counts = Counter()
    inputs: Counts = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != model:
                continue
            if sample.name == "anymodal_requests_total" and labels["route"] in routes:
                requests[(labels["route"], labels["code"])] += round(sample.value)
            elif sample.name == "anymodal_inputs_total":
                inputs[(labels["modality"], labels["state"])] += round(sample.value)
    return requests, inputs


def compare(client: Counts, server: Counts) -> list[str]:
    """Each series whose counts differ, as `labels: client N, server M`."""
    return [
        f"{' '.join(key)}: client {client[key]}, server {server[key]}"
        for key in sorted(set(client) | set(server))
        if client[key] != server[key]
    ]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (uvicorn's workers), summed."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):  # gone meanwhile
                continue
    tree, total = [pid], 0.0
    for member in tree:
        tree += [child for child, parent in parents.items() if parent == member]
        try:
            status = (Path("/proc") / str(member) / "status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


async def watch_memory(pid: int | None, first: float, started: float, rss: list[tuple[float, float]]) -> None:
    """The server's memory at `first` seconds, then every 10 s (the curve, for the JSON file)."""
    if pid is None:
        return
    await asyncio.sleep(first)
    while True:
        rss.append((round(time.perf_counter() - started, 1), rss_mb(pid)))
        await asyncio.sleep(10)


def start(workers: int) -> LiveServer:
    """A server of the bundled models, ready (its log goes to a file: `server.output()`)."""
    server = LiveServer(MODELS, workers=workers)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server
