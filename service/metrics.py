"""Prometheus metrics, all prefixed `anymodal_`.

With several uvicorn workers, `anymodal serve` sets PROMETHEUS_MULTIPROC_DIR before any worker
imports this module, so each worker writes its samples to shared files and `/metrics` (answered by
any worker) aggregates them all.
"""

from __future__ import annotations

import contextlib
import glob
import os
from functools import cache

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics import MetricWrapperBase

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
WEIGHT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
ENTROPY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
SCORE_BUCKETS = (-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REQUESTS = Counter(
    "anymodal_requests", "HTTP requests answered, by model, route and status code", ["model", "route", "code"]
)
REQUEST_DURATION = Histogram(
    "anymodal_request_duration_seconds",
    "Time to answer an HTTP request, by model and route",
    ["model", "route"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("anymodal_requests_in_flight", "HTTP requests being answered", multiprocess_mode="livesum")
INPUTS = Counter(
    "anymodal_inputs",
    "Inputs of predictions by model, modality and state: present (usable: fused, unless another"
    " input of its request got the request rejected), missing (not sent),"
    " invalid (unusable, request rejected), dropped (unusable, predicted without it),"
    " unreliable (decodable, but failed the reliability gate: not fused)",
    ["model", "modality", "state"],
)
COMBINATIONS = Counter(
    "anymodal_modality_combinations",
    "Predictions by the combination of modalities they were fused from",
    ["model", "combination"],
)
FUSION_WEIGHT = Histogram(
    "anymodal_fusion_weight",
    "Fusion weight of each present modality in a prediction",
    ["model", "modality"],
    buckets=WEIGHT_BUCKETS,
)
ENTROPY = Histogram(
    "anymodal_modality_entropy_nats",
    "Entropy of each present modality's calibrated prediction",
    ["model", "modality"],
    buckets=ENTROPY_BUCKETS,
)
RELIABILITY_SCORE = Histogram(
    "anymodal_reliability_score",
    "Reliability gate score of each gated input: mean log ratio of its Mahalanobis distances to"
    " those of clean validation inputs (0 is typical of clean inputs; higher is stranger)",
    ["model", "modality"],
    buckets=SCORE_BUCKETS,
)
DECODE_DURATION = Histogram(
    "anymodal_decode_duration_seconds",
    "Time to decode one request's inputs of a modality into encoder inputs",
    ["model", "modality"],
    buckets=FAST_BUCKETS,
)
INFERENCE_DURATION = Histogram(
    "anymodal_inference_duration_seconds",
    "onnxruntime run time per batch, by component (a modality's encoder, or the head)",
    ["model", "component"],
    buckets=FAST_BUCKETS,
)
BATCH_SIZE = Histogram(
    "anymodal_batch_size",
    "Rows per onnxruntime run, by component",
    ["model", "component"],
    buckets=BATCH_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "anymodal_queue_wait_seconds",
    "Time a request waited for a free slot in its model's pipeline (0 unless the server is busy)",
    ["model"],
    buckets=FAST_BUCKETS,
)
MODEL_INFO = Gauge(
    "anymodal_model_info",
    "1 for each loaded model version, with the execution provider it runs on",
    ["model", "version", "provider"],
    multiprocess_mode="livemax",
)
MODEL_READY = Gauge(
    "anymodal_model_ready",
    "1 when the model version is loaded, verified and warmed up",
    ["model", "version"],
    multiprocess_mode="livemax",
)
LOAD_FAILURES = Counter(
    "anymodal_model_load_failures",
    "Bundles that could not be served: failed verification or loading",
    ["model", "version"],
)
REPOSITORY_READABLE = Gauge(
    "anymodal_repository_readable",
    "0 while the model repository cannot be read (missing, unreadable, or holding no model while some"
    " are served): the models loaded keep serving, and polling changes nothing until it reads 1 again",
    multiprocess_mode="livemin",
)
REPOSITORY_ERRORS = Counter(
    "anymodal_repository_errors", "Polls of the model repository that could not read it"
)


@cache
def child(metric: MetricWrapperBase, *values: str) -> MetricWrapperBase:
    """`metric.labels(*values)`, looked up once: prometheus_client validates the values and takes a
    lock on every `labels()` call, which adds up over the dozen series a request touches. Only the
    server chooses label values (model, modality, state, route), so the cache stays small."""
    return metric.labels(*values)


class BatchMetrics:
    """A model's pipeline runs: how long each request of a run waited for it."""

    def __init__(self, model: str) -> None:
        self._wait = QUEUE_WAIT.labels(model=model)

    def batch(self, jobs: int, queue_waits: list[float]) -> None:
        for wait in queue_waits:
            self._wait.observe(wait)


STATES = ("present", "missing", "invalid", "dropped", "unreliable")


def initialize(model: str, modalities: list[str]) -> None:
    """Create a model's series at zero before its first request: a rate over a series that appears
    mid-window loses the increase up to its first sample, which would hide the first traffic."""
    for modality in modalities:
        for state in STATES:
            INPUTS.labels(model=model, modality=modality, state=state)
        FUSION_WEIGHT.labels(model=model, modality=modality)
        ENTROPY.labels(model=model, modality=modality)
        RELIABILITY_SCORE.labels(model=model, modality=modality)
        DECODE_DURATION.labels(model=model, modality=modality)
    if len(modalities) <= 6:  # at most 63 combinations
        for mask in range(1, 2 ** len(modalities)):
            chosen = [m for i, m in enumerate(modalities) if mask >> i & 1]
            COMBINATIONS.labels(model=model, combination="+".join(chosen))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def exposition() -> tuple[bytes, str]:
    """The metrics page, aggregated over every worker in multiprocess mode."""
    if multiprocess_dir():
        _forget_dead_workers()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """Forget a worker's live gauges (in-flight requests, models ready) once it has exited."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)


def _forget_dead_workers() -> None:
    """A worker that was killed (SIGKILL, out of memory) never called `worker_exited`: its requests
    in flight would be counted for ever. Whichever worker answers a scrape forgets them."""
    for path in glob.glob(os.path.join(multiprocess_dir() or "", "gauge_live*_*.db")):
        pid = int(os.path.basename(path)[: -len(".db")].rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):  # another worker's scrape got there first
                multiprocess.mark_process_dead(pid)
        except PermissionError:  # alive, as another user
            pass
