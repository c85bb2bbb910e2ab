"""From a config and a dataset to a published, evaluated bundle:

train every system at every seed (`training/experiment.py`) into `<runs>/seed-<seed>/<system>/`
-> evaluate every bundle on the test split, clean and under the frozen corruption suite, through
   ONNX, the gate and the service's fusion (`evaluation/robustness.py`)
-> summarize over seeds with intervals, write report.md and metrics.json
-> publish the seed chosen on validation into `<models>/<name>/<version>/`, manifest rehashed

Training code never imports this package; this module imports training, never the reverse.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
from anymodal.evaluation.report import write_report
from anymodal.evaluation.robustness import TestInputs, evaluate_bundle
from anymodal.evaluation.runner import BundleRunner
from anymodal.evaluation.summary import summarize
from anymodal.service.manifest import read_manifest
from anymodal.training.config import Config
from anymodal.training.dataset import read_split
from anymodal.training.experiment import chosen_seed, train_seeds
from anymodal.training.export import rewrite_manifest

log = logging.getLogger(__name__)


class WorkflowError(Exception):
    pass


def next_version(models: Path, name: str) -> int:
    versions = [int(p.name) for p in (models / name).glob("*") if p.name.isdigit()]
    return max(versions, default=0) + 1


def evaluate_runs(seed_folders: list[Path], test: Path) -> tuple[dict, dict]:
    """Evaluate `<seed folder>/<system>/` bundles on the `test` JSONL split. Returns the summary and
    the context the report needs."""
    started = time.perf_counter()
    first = read_manifest(seed_folders[0] / "mla")
    contracts = {m: spec.input for m, spec in first.modalities.items()}
    split, _ = read_split(test, contracts, first.labels, skip_bad_rows=False)
    data = TestInputs(split.signals, contracts)
    results: dict[str, list] = {}
    kept: dict[str, list[list[float]]] = {}
    for folder in seed_folders:
        for system in sorted(p.name for p in folder.iterdir() if (p / "manifest.json").is_file()):
            runner = BundleRunner(folder / system)
            if runner.contracts != contracts:
                raise WorkflowError(f"{folder / system}: its input contracts differ from {seed_folders[0]}'s")
            variants = {system: True} | ({"mla_no_gate": False} if system == "mla" else {})
            cells = evaluate_bundle(runner, data, split.labels, tuple(variants.values()))
            for variant, use_gate in variants.items():
                results.setdefault(variant, []).append(cells[use_gate])
            log.info("evaluated %s in %.0f s", folder / system, time.perf_counter() - started)
        epochs = [e for e in _read_log(folder / "mla" / "train_log.jsonl") if "hgm_kept" in e]
        for m in {m for e in epochs for m in e["hgm_kept"]}:
            kept.setdefault(m, []).append([e["hgm_kept"][m] for e in epochs if m in e["hgm_kept"]])
    counts = {variant: len(runs) for variant, runs in results.items()}
    if len(set(counts.values())) != 1:
        raise WorkflowError(f"every seed folder must hold the same systems; found {counts}")
    modalities = list(contracts)
    shortest = {m: min(len(v) for v in runs) for m, runs in kept.items()}
    mean_kept = {m: np.mean([v[: shortest[m]] for v in runs], axis=0).tolist() for m, runs in kept.items()}
    summary = summarize(results, modalities, mean_kept)
    context = {"modalities": modalities, "test_samples": len(split), "name": first.name}
    return summary, context


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def publish(
    summary: dict, context: dict, chosen: Path, models: Path, version: int | None, force: bool
) -> Path:
    """Copy the chosen bundle into the repository with its report, and rewrite its manifest."""
    manifest = read_manifest(chosen)
    version = version or next_version(models, manifest.name)
    bundle = models / manifest.name / str(version)
    if bundle.exists():
        if not force:
            raise WorkflowError(f"{bundle} already exists; choose another --version or pass --force")
        shutil.rmtree(bundle)
    shutil.copytree(chosen, bundle)
    write_report(bundle, summary, context)
    (bundle / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    full = "+".join(context["modalities"])
    matrix = summary["matrix"]["mla"]
    history = [step.model_dump() for step in manifest.history]
    if history:  # the training step produced the version it is published as
        history[-1]["version"] = version
    rewrite_manifest(
        bundle,
        version=version,
        history=history,
        training=manifest.training | {"seeds": context["seeds"], "chosen_seed": context["chosen_seed"]},
        metrics={
            "test_accuracy": matrix[full]["clean"]["mean"],
            "test_accuracy_by_subset": {s: row["clean"]["mean"] for s, row in matrix.items()},
            "test_samples": context["test_samples"],
            "seeds": context["seeds"],
        },
    )
    log.info("published %s", bundle)
    return bundle


def run(
    config: Config,
    data: Path,
    models: Path,
    runs: Path,
    seeds: list[int],
    systems: list[str],
    version: int | None = None,
    force: bool = False,
    skip_bad_rows: bool = False,
    progress: bool = True,
    provenance: dict | None = None,
) -> Path:
    """Train, evaluate, report and publish; returns the published bundle."""
    provenance = provenance or {}
    _, seed_runs = train_seeds(config, data, runs, seeds, systems, provenance, skip_bad_rows, progress)
    summary, context = evaluate_runs([runs / f"seed-{s}" for s in seeds], data / "test.jsonl")
    chosen = chosen_seed(seed_runs)
    context |= {"seeds": seeds, "chosen_seed": chosen.seed, "command": provenance.get("command")}
    return publish(summary, context, chosen.bundles["mla"], models, version, force)
