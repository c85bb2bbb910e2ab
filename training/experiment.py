"""Training runs from a config and a dataset to exported bundles, one seed at a time:

load and decode the splits -> fit input normalization on train
-> for each seed: train MLA (HGM on), MLA without HGM and joint training
   -> fit each one's per-modality temperatures and reliability gate on clean data
   -> export each one as a complete bundle: <runs>/seed-<seed>/<system>/
-> the seed whose MLA has the lowest fused validation NLL is the one to publish

The test split is not read here: evaluation (`evaluation/`) reads it once, through the exported
bundles, the way the service runs them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version as version_of
from pathlib import Path

import numpy as np
import torch
from anymodal.service.fusion import FusionRule
from anymodal.service.manifest import GrowthSpec, InputContract, ReliabilitySpec
from anymodal.service.reliability import fit_reliability
from anymodal.training.calibrate import fit_count_temperatures, fit_temperatures
from anymodal.training.config import Config, ModelConfig, TrainConfig
from anymodal.training.dataset import Split, fit_normalization, load_splits
from anymodal.training.evaluate import Tensors, fused_nll, modality_logits
from anymodal.training.export import export_model, write_manifest
from anymodal.training.growth import Reservoir, encode, growth_spec, save_encoder, save_projector, step
from anymodal.training.hgm import HeadGradientProjector
from anymodal.training.model import MultimodalModel
from anymodal.training.train import History, Method, train_model

log = logging.getLogger(__name__)
RELIABILITY_FILE = "{modality}.reliability.npz"


@dataclass(frozen=True)
class System:
    description: str
    method: Method
    hgm: bool
    rule: FusionRule


SYSTEMS = {
    "mla": System("MLA", "mla", True, "entropy"),
    "mla_no_hgm": System("MLA without HGM", "mla", False, "entropy"),
    "joint": System("joint training", "joint", False, "mean"),
}


class ExperimentError(Exception):
    pass


@dataclass
class Prepared:
    """The decoded splits, the labels and the contracts with their fitted normalization."""

    splits: dict[str, Split]
    labels: list[str]
    contracts: dict[str, InputContract]
    tensors: dict[str, Tensors]


@dataclass
class SeedRun:
    """One seed's trained systems: the bundle of each and what validation said of it."""

    seed: int
    bundles: dict[str, Path] = field(default_factory=dict)
    val_nll: dict[str, float] = field(default_factory=dict)
    histories: dict[str, History] = field(default_factory=dict)


def prepare(config: Config, data: Path, skip_bad_rows: bool = False) -> Prepared:
    torch.set_num_threads(config.train.threads or os.cpu_count() or 1)
    splits, labels = load_splits(data, config.modalities, config.labels, skip_bad_rows)
    contracts = fit_normalization(config.modalities, splits["train"])
    tensors = {name: Tensors.from_split(split, contracts) for name, split in splits.items() if name != "test"}
    log.info("data: %s samples, labels %s", {k: len(v) for k, v in splits.items()}, labels)
    return Prepared(splits, labels, contracts, tensors)


def train_seed(
    config: Config,
    prepared: Prepared,
    seed: int,
    out: Path,
    systems: list[str],
    provenance: dict,
    progress: bool = True,
) -> SeedRun:
    """Train `systems` with `seed` and export each one as a bundle under `out/<system>/`."""
    run = SeedRun(seed)
    train, val = prepared.tensors["train"], prepared.tensors["val"]
    for name in systems:
        system = SYSTEMS[name]
        bundle = out / name
        if bundle.exists():
            shutil.rmtree(bundle)
        bundle.mkdir(parents=True)
        train_config = replace(config.train, seed=seed)
        torch.manual_seed(seed)
        model = MultimodalModel(prepared.contracts, len(prepared.labels), config.model)
        projector = (
            HeadGradientProjector(config.model.feature_dim, config.train.hgm_alpha) if system.hgm else None
        )
        history = train_model(
            model, train, val, train_config, system.method, system.hgm, name,
            bundle / "train_log.jsonl", progress, projector,
        )  # fmt: skip
        val_logits = modality_logits(model, val)
        present = val.present_matrix(model.modalities)
        temperatures = (
            fit_temperatures(val_logits, present, val.labels.numpy())
            if system.rule == "entropy"
            else np.ones(len(model.modalities))
        )
        count_temperatures = fit_count_temperatures(
            val_logits, present, val.labels.numpy(), temperatures, system.rule
        )
        files = export_model(model, prepared.contracts, bundle, val)
        reliability = fit_gates(model, train, val, bundle, config.train.reliability_alpha)
        samples = {k: len(v) for k, v in prepared.splits.items()}
        growth = None
        if projector is not None:  # only a head trained with HGM knows which directions to protect
            growth = save_growth(model, train, projector, bundle, config.train, seed, config.model)
        write_manifest(
            bundle,
            name=config.name,
            version=1,
            labels=prepared.labels,
            contracts=prepared.contracts,
            files=files,
            temperatures={m: float(t) for m, t in zip(model.modalities, temperatures, strict=True)},
            reliability=reliability,
            feature_dim=config.model.feature_dim,
            rule=system.rule,
            count_temperatures=count_temperatures.tolist(),
            training=config.to_dict()
            | {
                "seed": seed,
                "system": name,
                "best_epoch": history.best_epoch,
                "val_fused_nll": history.best_val_nll,
                "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "anymodal": version_of("anymodal"),
                "torch": torch.__version__,
            },
            data=provenance | {"samples": samples},
            metrics={},
            growth=growth,
            history=[
                step("train", 1, model.modalities, model.modalities, samples, config.to_dict(), provenance)
            ],
        )
        run.bundles[name] = bundle
        run.val_nll[name] = fused_nll(val_logits, val, system.rule, temperatures, count_temperatures)
        run.histories[name] = history
        log.info("seed %d %s: validation NLL %.4f, bundle %s", seed, name, run.val_nll[name], bundle)
    (out / "seed.json").write_text(
        json.dumps(
            {"seed": seed, "val_nll": run.val_nll, "bundles": {k: str(v) for k, v in run.bundles.items()}}
        )
        + "\n"
    )
    return run


@torch.no_grad()
def fit_gates(
    model: MultimodalModel, train: Tensors, val: Tensors, bundle: Path, alpha: float
) -> dict[str, ReliabilitySpec]:
    """Each modality's reliability gate, fitted on its clean training and validation probes."""
    model.eval()
    specs = {}
    for m in model.modalities:
        encoder = model.encoders[m]
        train_rows = train.present[m].nonzero().squeeze(1)
        val_rows = val.present[m].nonzero().squeeze(1)
        train_probes = torch.cat(
            [encoder.forward_with_probes(train.inputs[m][c])[1] for c in train_rows.split(512)]
        )
        val_probes = torch.cat(
            [encoder.forward_with_probes(val.inputs[m][c])[1] for c in val_rows.split(512)]
        )
        gate = fit_reliability(
            train_probes.numpy(), train.labels[train_rows].numpy(), val_probes.numpy(), encoder.probe_widths()
        )
        if 1 / (1 + len(val_rows)) >= alpha:
            log.warning(
                "%s: the reliability gate cannot flag any input: %d validation inputs give p-values of"
                " 1/%d at least, not below alpha %g; validate on %d or more",
                m, len(val_rows), len(val_rows) + 1, alpha, int(np.ceil(1 / alpha)),
            )  # fmt: skip
        file = RELIABILITY_FILE.format(modality=m)
        gate.save(bundle / file)
        specs[m] = ReliabilitySpec(file=file, alpha=alpha)
    return specs


@torch.no_grad()
def save_growth(
    model: MultimodalModel,
    train: Tensors,
    projector: HeadGradientProjector,
    bundle: Path,
    settings: TrainConfig,
    seed: int,
    model_config: ModelConfig,
) -> GrowthSpec:
    """Write what the bundle needs to grow: the head's projector and the replay reservoir of each
    modality's training features (and inputs, with `settings.replay_inputs`)."""
    model.eval()
    reservoir = Reservoir(settings.replay_size)
    encoders = {}
    for m in model.modalities:
        rows = train.present[m].nonzero().squeeze(1)
        features = encode(model.encoders[m], train.inputs[m][rows])
        inputs = train.inputs[m][rows].numpy() if settings.replay_inputs else None
        reservoir.add(m, features.numpy(), train.labels[rows].numpy(), seed, inputs)
        encoders[m] = save_encoder(model.encoders[m], model_config, bundle, m)
    spec = growth_spec(reservoir, encoders)
    save_projector(projector, bundle / spec.projector)
    reservoir.save(bundle / spec.replay)
    return spec


def chosen_seed(runs: list[SeedRun]) -> SeedRun:
    """The seed whose MLA has the lowest fused validation NLL."""
    return min(runs, key=lambda run: run.val_nll["mla"])


def train_seeds(
    config: Config,
    data: Path,
    runs: Path,
    seeds: list[int],
    systems: list[str],
    provenance: dict,
    skip_bad_rows: bool = False,
    progress: bool = True,
) -> tuple[Prepared, list[SeedRun]]:
    """Train every system at every seed into `runs/seed-<seed>/`."""
    if not seeds:
        raise ExperimentError("name at least one seed")
    if "mla" not in systems:
        raise ExperimentError("the systems must include 'mla', the one that is published")
    started = time.perf_counter()
    prepared = prepare(config, data, skip_bad_rows)
    done = [
        train_seed(config, prepared, seed, runs / f"seed-{seed}", systems, provenance, progress)
        for seed in seeds
    ]
    log.info(
        "trained %d seed(s) x %d system(s) in %.0f s", len(seeds), len(systems), time.perf_counter() - started
    )
    return prepared, done
