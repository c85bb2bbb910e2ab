"""Robustness through the HTTP API: the frozen corruption suite sent to the service as users send it.

    python bench/robustness_http.py [--model-dir models/digits/1] [--data data/digits] [--samples 300]
        [--conditions clean,audio:tone:2 | all] [--url http://127.0.0.1:8000]

The robustness report (evaluation/robustness.py) scores a bundle in process, on encoder inputs;
users meet it through `POST /v1/models/<name>/versions/<version>/predict`, with files their own
tools encoded, decoded, gated and fused by the service. This sends the very corrupted inputs
the report scores (same `EVALUATION_SEED`, one rng per (modality, family, severity) drawn over
the split in order) through that API, one request per sample of the first --samples test rows, with
every modality the sample has, and checks the answers against `BundleRunner` run on the same bytes
decoded with `service.decoding.decode`. Images go as lossless PNG, audio as 16-bit PCM WAV, whose
quantisation may change a few answers: in-process accuracy on the raw signals is shown next to it.

Per condition: HTTP accuracy, in-process accuracy (decoded files, raw signals), label agreement and
largest score gap between the paths, mean score, the share of the corrupted modality reported
`unreliable` (clean: of every input, i.e. false alarms), the share of `reliable: false` answers and
the median latency. Without --url it starts the server on a free loopback port (as tests/live.py
does), serving the repository two folders above --model-dir.
"""

from __future__ import annotations

import argparse
import base64
import io
import shlex
import statistics
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import soundfile
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anymodal.evaluation.corruptions import corrupt, families  # noqa: E402
from anymodal.evaluation.robustness import (  # noqa: E402
    CLEAN,
    EVALUATION_SEED,
    TestInputs,
    condition_name,
    parse_condition,
)
from anymodal.evaluation.runner import Answers, BundleRunner, encoder_inputs  # noqa: E402
from anymodal.service.decoding import decode  # noqa: E402
from anymodal.service.manifest import AudioContract, ImageContract, InputContract  # noqa: E402
from anymodal.training.dataset import read_split  # noqa: E402

from tests.live import LiveServer  # noqa: E402

DEFAULT_SEVERITY = 2


@dataclass(frozen=True)
class Row:
    condition: str
    n: int
    http_acc: float
    inproc_acc: float
    raw_acc: float
    agreement: float
    score_gap: float
    mean_score: float
    unreliable: float
    not_reliable: float
    encoding_diff: int  # samples whose in-process label the file round trip changed
    encoding_gap: float  # the largest in-process score change it made
    gate_diff: int  # samples whose per-modality gate verdicts differ between the paths
    p50_ms: float
    errors: int


def corrupted_signals(
    signals: list[object | None], contract: InputContract, modality: str, condition: str, stop: int
) -> list[object | None]:
    """The signals of samples [0, stop) under `condition`, drawn exactly as TestInputs.inputs draws
    them: one rng per (modality, family, severity), advanced over every sample in order. Samples
    after `stop` draw later, so leaving them out changes nothing before it."""
    parsed = parse_condition(condition)
    if parsed is None or parsed[0] != modality:
        return signals[:stop]
    _, family, severity = parsed
    rng = np.random.default_rng([EVALUATION_SEED, zlib.crc32(f"{modality}:{family}".encode()), severity])
    return [None if s is None else corrupt(s, contract, family, severity, rng) for s in signals[:stop]]


def encode(signal: object, contract: InputContract) -> tuple[object, object]:
    """(the JSON value sent, the raw value the service decodes) for one signal."""
    if isinstance(contract, ImageContract | AudioContract):
        buffer = io.BytesIO()
        if isinstance(contract, ImageContract):
            Image.fromarray(np.asarray(signal, dtype=np.uint8)).save(buffer, format="PNG")
        else:
            wave = np.asarray(signal, dtype=np.float32)
            soundfile.write(buffer, wave, contract.sample_rate, format="WAV", subtype="PCM_16")
        data = buffer.getvalue()
        return {"b64": base64.b64encode(data).decode("ascii")}, data
    if isinstance(signal, np.ndarray):
        return signal.tolist(), signal.tolist()
    return signal, signal


def choose_conditions(spec: str | None, data: TestInputs) -> list[str]:
    known = data.conditions()
    if spec is None:
        return [CLEAN] + [
            condition_name(m, family, DEFAULT_SEVERITY)
            for m, contract in data.contracts.items()
            for family in families(contract.kind)
        ]
    if spec == "all":
        return known
    chosen = [c.strip() for c in spec.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in known]
    if unknown:
        sys.exit(f"--conditions: unknown {unknown}; known: {', '.join(known)}")
    return chosen


def measure(
    condition: str,
    data: TestInputs,
    labels: list[str],
    truth: np.ndarray,
    runner: BundleRunner,
    client: httpx.Client,
    path: str,
) -> tuple[Row, list[float]]:
    n = len(truth)
    modalities = runner.modalities
    signals = {m: corrupted_signals(data.signals[m], c, m, condition, n) for m, c in data.contracts.items()}
    present = np.stack([data.present[m][:n] for m in modalities], axis=1)
    sent: dict[str, list[tuple[object, object] | None]] = {
        m: [None if s is None else encode(s, data.contracts[m]) for s in signals[m]] for m in modalities
    }
    answers: list[dict | None] = []
    latencies: list[float] = []
    errors: list[str] = []
    for i in range(n):
        inputs = {m: sent[m][i][0] for m in modalities if sent[m][i] is not None}  # type: ignore[index]
        started = time.perf_counter()
        response = client.post(path, json={"inputs": inputs})
        latencies.append(time.perf_counter() - started)
        answers.append(response.json() if response.status_code == 200 else None)
        if response.status_code != 200:
            errors.append(f"sample {i}: {response.status_code} {response.text[:200]}")
    if errors:
        print(f"{condition}: {len(errors)} HTTP error(s), first: {errors[0]}", file=sys.stderr)

    def in_process(by_modality: dict[str, list[object | None]]) -> Answers:
        outputs = {
            m: runner.run(m, encoder_inputs(by_modality[m], data.contracts[m]), present[:, j])
            for j, m in enumerate(modalities)
        }
        return runner.answer(outputs, present)

    decoded = {
        m: [None if s is None else decode(s[1], data.contracts[m], m) for s in sent[m]] for m in modalities
    }
    inproc, raw = in_process(decoded), in_process(signals)
    http_labels = np.array([labels.index(a["label"]) if a else -1 for a in answers])
    http_scores = np.array([a["score"] if a else np.nan for a in answers])
    flags = np.array(
        [[bool(a) and a["modalities"][m]["state"] == "unreliable" for m in modalities] for a in answers]
    )
    parsed = parse_condition(condition)
    watched = np.isin(modalities, [parsed[0]] if parsed else modalities)[None, :] & present
    row = Row(
        condition=condition,
        n=n,
        http_acc=float(np.mean(http_labels == truth)),
        inproc_acc=float(np.mean(inproc.labels == truth)),
        raw_acc=float(np.mean(raw.labels == truth)),
        agreement=float(np.mean(http_labels == inproc.labels)),
        score_gap=float(np.nanmax(np.abs(http_scores - inproc.scores), initial=0.0)),
        mean_score=float(np.nanmean(http_scores)) if n > len(errors) else float("nan"),
        unreliable=float(flags[watched].mean()) if watched.any() else 0.0,
        not_reliable=float(np.mean([bool(a) and not a.get("reliable", True) for a in answers])),
        encoding_diff=int((raw.labels != inproc.labels).sum()),
        encoding_gap=float(np.abs(raw.scores - inproc.scores).max(initial=0.0)),
        gate_diff=int((flags != inproc.gated.unreliable).any(axis=1).sum()),
        p50_ms=1000 * statistics.median(latencies),
        errors=len(errors),
    )
    return row, latencies


def report(rows: list[Row], latencies: list[float]) -> None:
    header = f"{'condition':24}{'n':>5}{'HTTP acc':>10}{'in-proc':>9}{'raw sig':>9}{'agree':>8}"
    header += f"{'max|dS|':>9}{'score':>7}{'unrel':>7}{'!reliable':>10}{'p50 ms':>8}"
    print(header)
    for r in rows:
        print(f"{r.condition:24}{r.n:>5}{r.http_acc:>10.3f}{r.inproc_acc:>9.3f}{r.raw_acc:>9.3f}"
              f"{r.agreement:>8.3f}{r.score_gap:>9.1e}{r.mean_score:>7.3f}{r.unreliable:>7.3f}"
              f"{r.not_reliable:>10.3f}{r.p50_ms:>8.2f}")  # fmt: skip
    print("\nin-proc: BundleRunner on the decoded files sent; raw sig: on the signals before encoding")
    print("unrel: share of the corrupted modality reported `unreliable` (clean: of every input sent)")
    print(f"\nrequests: {len(latencies)}, HTTP errors: {sum(r.errors for r in rows)}, request latency:"
          f" median {1000 * statistics.median(latencies):.2f} ms,"
          f" p90 {1000 * float(np.percentile(latencies, 90)):.2f} ms, one at a time")  # fmt: skip
    changed = {r.condition: r.encoding_diff for r in rows if r.encoding_diff}
    gap = max(r.encoding_gap for r in rows)
    print(f"in-process labels changed by the file round trip (PNG, PCM_16 WAV): {changed or 'none'};"
          f" largest score change {gap:.1e}")  # fmt: skip
    gates = {r.condition: r.gate_diff for r in rows if r.gate_diff}
    print(f"samples whose gate verdicts differ, HTTP vs in-process: {gates or 'none'}")
    print(f"command: {shlex.join(sys.orig_argv)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "digits" / "1")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "digits", help="Folder with test.jsonl")
    parser.add_argument("--samples", type=int, default=300, help="The first N rows of the test split")
    parser.add_argument("--conditions", help="Comma-separated names, or `all`; default: clean + severity 2")
    parser.add_argument("--url", help="A running server to use instead of starting one")
    args = parser.parse_args()

    runner = BundleRunner(args.model_dir.resolve(), threads=1)
    manifest = runner.manifest
    split, _ = read_split(args.data / "test.jsonl", runner.contracts, manifest.labels, skip_bad_rows=False)
    data = TestInputs(split.signals, runner.contracts)
    conditions = choose_conditions(args.conditions, data)
    truth = split.labels[: max(1, args.samples)]
    path = f"/v1/models/{manifest.name}/versions/{manifest.version}/predict"

    server = None if args.url else LiveServer(args.model_dir.resolve().parents[1])
    try:
        if server is not None:
            server.wait_ready(timeout=120)
        url = args.url or server.url  # type: ignore[union-attr]
        print(f"model {manifest.name} v{manifest.version} at {url}; {len(truth)}/{len(split)} test samples")
        with httpx.Client(base_url=url, timeout=60) as client:
            client.get("/v2/health/ready").raise_for_status()
            rows: list[Row] = []
            latencies: list[float] = []
            for condition in conditions:
                row, times = measure(condition, data, manifest.labels, truth, runner, client, path)
                rows.append(row)
                latencies += times
        print()
        report(rows, latencies)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
