"""One training run from a config and a dataset to an exported bundle:

load and decode the splits -> fit input normalization on train
-> train MLA (HGM on) -> fit per-modality temperatures on validation
-> train the ablation and baselines (MLA without HGM, joint training, one model per modality)
-> evaluate everything on the test split, read once -> export MLA to ONNX with its manifest
-> write metrics.json, report.md and the plots into the bundle
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as version_of
from pathlib import Path

import numpy as np
import torch

from service.fusion import FusionRule, fuse
from service.manifest import InputContract
from training.calibrate import fit_temperatures
from training.config import Config
from training.dataset import Split, fit_normalization, load_splits
from training.evaluate import (
    CLEAN,
    Tensors,
    corrupted_logits,
    fused_accuracy,
    modality_logits,
    own_accuracy,
    robustness_matrix,
)
from training.export import export_model, write_manifest
from training.model import MultimodalModel
from training.report import check_claims, write_report
from training.train import History, Method, train_model

log = logging.getLogger(__name__)


class ExperimentError(Exception):
    pass


@dataclass
class Trained:
    """A trained multimodal model with what it needs to be evaluated."""

    name: str
    description: str
    model: MultimodalModel
    rule: FusionRule
    temperatures: np.ndarray
    history: History


def next_version(models: Path, name: str) -> int:
    versions = [int(p.name) for p in (models / name).glob("*") if p.name.isdigit()]
    return max(versions, default=0) + 1


def run_experiment(
    config: Config,
    data: Path,
    models: Path,
    version: int | None = None,
    baselines: bool = True,
    skip_bad_rows: bool = False,
    progress: bool = True,
    force: bool = False,
    provenance: dict | None = None,
) -> Path:
    """Train, evaluate and export; returns the bundle folder `models/<name>/<version>`."""
    started = time.perf_counter()
    torch.set_num_threads(config.train.threads or os.cpu_count() or 1)
    version = version or next_version(models, config.name)
    bundle = models / config.name / str(version)
    if bundle.exists() and any(bundle.iterdir()):
        if not force:
            raise ExperimentError(f"{bundle} already exists; choose another --version or pass --force")
        for path in bundle.rglob("*"):
            if path.is_file():
                path.unlink()
    bundle.mkdir(parents=True, exist_ok=True)
    train_log = bundle / "train_log.jsonl"

    splits, labels = load_splits(data, config.modalities, config.labels, skip_bad_rows)
    contracts = fit_normalization(config.modalities, splits["train"])
    tensors = {name: Tensors.from_split(split, contracts) for name, split in splits.items()}
    seconds = {"data": time.perf_counter() - started}
    log.info("data: %s samples, labels %s", {k: len(v) for k, v in splits.items()}, labels)

    def train(name: str, description: str, method: Method, hgm: bool) -> Trained:
        model = _new_model(contracts, len(labels), config)
        history = train_model(
            model, tensors["train"], tensors["val"], config.train, method, hgm, name, train_log, progress
        )
        seconds[name] = history.seconds
        val_logits = modality_logits(model, tensors["val"])
        present = tensors["val"].present_matrix(model.modalities)
        temperatures = (
            fit_temperatures(val_logits, present, tensors["val"].labels.numpy())
            if method == "mla"
            else np.ones(len(model.modalities))
        )
        rule: FusionRule = "entropy" if method == "mla" else "mean"
        return Trained(name, description, model, rule, temperatures, history)

    mla = train("mla", "MLA, entropy fusion", "mla", config.train.hgm)
    systems = [mla]
    unimodal: dict[str, dict] = {}
    if baselines:
        systems.append(train("mla_no_hgm", "MLA without HGM, entropy fusion", "mla", hgm=False))
        systems.append(train("joint", "joint training, sum of logits", "joint", hgm=False))
        for m in contracts:
            unimodal[m] = _train_unimodal(m, contracts, labels, config, tensors, train_log, progress)
            seconds[f"unimodal_{m}"] = unimodal[m]["seconds"]

    evaluated = time.perf_counter()
    results = {
        system.name: _evaluate(system, splits["test"], tensors["test"], contracts, config.train.seed)
        for system in systems
    }
    results["mla_mean"] = _evaluate(
        Trained("mla_mean", "MLA, plain averaging", mla.model, "mean", mla.temperatures, mla.history),
        splits["test"], tensors["test"], contracts, config.train.seed,
    )  # fmt: skip
    weights = _fusion_weights(mla, splits["test"], tensors["test"], contracts, config.train.seed)
    seconds["evaluate"] = time.perf_counter() - evaluated

    exported = time.perf_counter()
    files = export_model(mla.model, contracts, bundle, tensors["test"])
    seconds["export"] = time.perf_counter() - exported
    seconds["total"] = time.perf_counter() - started

    metrics = {
        "labels": labels,
        "modalities": list(contracts),
        "samples": {name: len(split) for name, split in splits.items()},
        "skipped_rows": {name: len(split.skipped) for name, split in splits.items()},
        "systems": results,
        "unimodal": unimodal,
        "fusion_weights": {
            condition: {
                m: {"mean": float(w.mean()), **{f"p{q}": float(np.percentile(w, q)) for q in (10, 50, 90)}}
                for m, w in by_modality.items()
            }
            for condition, by_modality in weights.items()
        },
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "machine": {"threads": torch.get_num_threads(), "platform": platform.platform()},
    }
    metrics["claims"] = check_claims(metrics)
    (bundle / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    histories = {s.name: s.history for s in systems}
    write_report(bundle, config, metrics, histories, weights, provenance or {})

    everything = "+".join(contracts)
    write_manifest(
        bundle,
        name=config.name,
        version=version,
        labels=labels,
        contracts=contracts,
        files=files,
        temperatures={m: float(t) for m, t in zip(contracts, mla.temperatures, strict=True)},
        feature_dim=config.model.feature_dim,
        training=config.to_dict()
        | {
            "best_epoch": mla.history.best_epoch,
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "anymodal": version_of("anymodal"),
            "torch": torch.__version__,
        },
        data=(provenance or {}) | {"folder": data.name, "samples": metrics["samples"]},
        metrics={
            "test_accuracy": results["mla"]["robustness"][everything][CLEAN],
            "test_accuracy_by_subset": {k: v[CLEAN] for k, v in results["mla"]["robustness"].items()},
            "test_samples": len(splits["test"]),
        },
    )
    log.info("bundle written to %s in %.0f s", bundle, time.perf_counter() - started)
    return bundle


def _new_model(contracts: dict[str, InputContract], classes: int, config: Config) -> MultimodalModel:
    torch.manual_seed(config.train.seed)
    return MultimodalModel(contracts, classes, config.model)


def _evaluate(
    system: Trained, split: Split, data: Tensors, contracts: dict[str, InputContract], seed: int
) -> dict:
    clean = modality_logits(system.model, data)
    corrupted = corrupted_logits(system.model, split, data, contracts, clean, seed)
    return {
        "description": system.description,
        "rule": system.rule,
        "temperatures": dict(zip(contracts, system.temperatures.round(4).tolist(), strict=True)),
        "best_epoch": system.history.best_epoch,
        "epochs_run": len(system.history.epochs),
        "val_accuracy": system.history.best_val_accuracy,
        "own_accuracy": own_accuracy(clean, data),
        "robustness": robustness_matrix(clean, corrupted, data, system.rule, system.temperatures),
    }


def _fusion_weights(
    system: Trained, split: Split, data: Tensors, contracts: dict[str, InputContract], seed: int
) -> dict[str, dict[str, np.ndarray]]:
    """MLA's entropy-fusion weights on the complete test samples, clean and with each modality
    corrupted: {condition: {modality: weight per sample}}."""
    clean = modality_logits(system.model, data)
    conditions = {CLEAN: clean} | {
        f"{m} corrupted": logits
        for m, logits in corrupted_logits(system.model, split, data, contracts, clean, seed).items()
    }
    present = data.present_matrix(system.model.modalities)
    complete = present.all(axis=1)
    out = {}
    for condition, logits in conditions.items():
        fused = fuse(logits[complete], present[complete], system.temperatures, "entropy")
        out[condition] = {m: fused.weights[:, i] for i, m in enumerate(system.model.modalities)}
    return out


def _train_unimodal(
    modality: str,
    contracts: dict[str, InputContract],
    labels: list[str],
    config: Config,
    tensors: dict[str, Tensors],
    train_log: Path,
    progress: bool,
) -> dict:
    """The unimodal baseline: the modality's encoder and a head of its own, trained alone."""
    only = {modality: contracts[modality]}

    def restrict(data: Tensors) -> Tensors:
        return Tensors({modality: data.inputs[modality]}, {modality: data.present[modality]}, data.labels)

    model = _new_model(only, len(labels), config)
    history = train_model(
        model, restrict(tensors["train"]), restrict(tensors["val"]), config.train, "mla",
        hgm=False, name=f"unimodal_{modality}", log_path=train_log, progress=progress,
    )  # fmt: skip
    test = restrict(tensors["test"])
    return {
        "accuracy": fused_accuracy(modality_logits(model, test), test, "mean"),
        "best_epoch": history.best_epoch,
        "val_accuracy": history.best_val_accuracy,
        "seconds": history.seconds,
        "curve": [e["val"]["accuracy"][modality] for e in history.epochs],
    }
