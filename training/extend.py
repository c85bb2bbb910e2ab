"""`anymodal extend BUNDLE --add CONFIG --data DIR`: a served model learns new modalities, without
training its old encoders again and without forgetting them.

    old bundle (encoders, head, HGM projector P, replay reservoir)
    -> per mini-batch: each new modality's unimodal step (its new encoder and the shared head),
       the head's update projected through P, which then takes in the new modality's features;
       then one replay step: a batch of the old modalities' reservoir features through the head,
       its update projected through P as well
    -> the epoch with the lowest fused validation NLL (old modalities through their own ONNX
       encoders, unchanged) is kept
    -> the new modalities' temperatures and reliability gates are fitted, the count temperatures
       refitted, and a new version is written next to the old one: the old encoders and gates are
       copied byte for byte, the lineage gets an `extend` step.

Old modalities keep their predictions because the head only moves along directions they do not
use (P), and the replay pulls it back where P has left some room.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from anymodal.service.fusion import fuse, log_softmax
from anymodal.service.manifest import InputContract, Manifest, verify_bundle
from anymodal.training.calibrate import fit_count_temperatures, fit_temperatures
from anymodal.training.config import Config
from anymodal.training.dataset import fit_normalization, read_split
from anymodal.training.evaluate import Tensors
from anymodal.training.experiment import fit_gates
from anymodal.training.export import export_model, write_manifest
from anymodal.training.growth import (
    BestEpoch,
    GrowthError,
    Reservoir,
    encode,
    growth_spec,
    load_head,
    load_projector,
    replay_step,
    save_encoder,
    save_projector,
    step,
)
from anymodal.training.hgm import HeadGradientProjector, HeadOptimizer
from anymodal.training.model import MultimodalModel
from anymodal.training.train import unimodal_step

log = logging.getLogger(__name__)
PROTECT_ALPHA = 0.01  # a class-mean direction keeps 1% of its gradient (see `protect`)


def next_version(bundle: Path) -> Path:
    """The folder of the version after every one next to `bundle`."""
    versions = [int(p.name) for p in bundle.parent.iterdir() if p.name.isdigit()]
    return bundle.parent / str(max(versions, default=0) + 1)


def extend(bundle: Path, config: Config, data: Path, seed: int = 0, skip_bad_rows: bool = False) -> Path:
    """Add `config`'s modalities to the model of `bundle`; returns the new version's folder."""
    started = time.perf_counter()
    old = verify_bundle(bundle)
    added = _check(old, config)
    torch.set_num_threads(config.train.threads or os.cpu_count() or 1)
    torch.manual_seed(seed)
    old_contracts = {m: spec.input for m, spec in old.modalities.items()}
    train, val, samples, contracts = _read(data, old, config, skip_bad_rows)

    model = MultimodalModel({m: contracts[m] for m in added}, len(old.labels), config.model)
    model.head = load_head(bundle, old)
    growth = old.growth
    assert growth is not None  # _check
    projector = load_projector(bundle / growth.projector, config.train.hgm_alpha)
    reservoir = Reservoir.load(bundle / growth.replay, growth.replay_size)
    old_val = _old_features(bundle, old, val)  # (N, D) per old modality, NaN-free zeros where absent
    _train(model, train, val, old_val, old, reservoir, projector, config, seed)

    out = next_version(bundle)
    out.mkdir()
    for spec in old.modalities.values():  # the old encoders and gates, byte for byte
        shutil.copy2(bundle / spec.file, out / spec.file)
        if spec.reliability is not None:
            shutil.copy2(bundle / spec.reliability.file, out / spec.reliability.file)
    new_train, new_val = _subset(train, added), _subset(val, added)
    files = export_model(model, {m: contracts[m] for m in added}, out, new_val)
    reliability = {m: s.reliability for m, s in old.modalities.items() if s.reliability is not None}
    reliability |= fit_gates(model, new_train, new_val, out, config.train.reliability_alpha)
    logits, present = _val_logits(model, val, old_val, old)
    labels = val.labels.numpy()
    first = len(old.modalities)  # the new modalities' columns come after the old ones'
    own = fit_temperatures(logits[:, first:], present[:, first:], labels)
    temperatures = {m: s.temperature for m, s in old.modalities.items()}
    temperatures |= dict(zip(added, own.tolist(), strict=True))
    count_temperatures = fit_count_temperatures(
        logits, present, labels, np.array(list(temperatures.values())), old.fusion.rule
    )
    model.eval()
    with torch.no_grad():
        for m in added:
            rows = new_train.present[m].nonzero().squeeze(1)
            features = encode(model.encoders[m], new_train.inputs[m][rows])
            inputs = new_train.inputs[m][rows].numpy() if config.train.replay_inputs else None
            reservoir.add(m, features.numpy(), new_train.labels[rows].numpy(), seed, inputs)
    encoders = dict(growth.encoders)
    for weights in growth.encoders.values():
        shutil.copy2(bundle / weights.file, out / weights.file)
    encoders |= {m: save_encoder(model.encoders[m], config.model, out, m) for m in added}
    spec = growth_spec(reservoir, encoders)
    save_projector(projector, out / spec.projector)
    reservoir.save(out / spec.replay)
    version = int(out.name)
    seconds = time.perf_counter() - started
    write_manifest(
        out,
        name=old.name,
        version=version,
        labels=old.labels,
        contracts=old_contracts | {m: contracts[m] for m in added},
        files={m: s.file for m, s in old.modalities.items()} | files,
        temperatures=temperatures,
        reliability=reliability,
        feature_dim=old.head.feature_dim,
        rule=old.fusion.rule,
        count_temperatures=count_temperatures.tolist(),
        training=config.to_dict() | {"seed": seed, "from_version": old.version, "seconds": round(seconds, 1)},
        data={"samples": samples},
        metrics={},
        growth=spec,
        history=[
            *old.history,
            step("extend", version, [*old.modalities, *added], added, samples, config.to_dict(), {},
                 from_version=old.version, added=added),
        ],
    )  # fmt: skip
    log.info("extended %s version %d with %s in %.0f s: version %d, %s", old.name, old.version, added,
             seconds, version, out)  # fmt: skip
    return out


def _check(old: Manifest, config: Config) -> list[str]:
    if old.growth is None:
        raise GrowthError(
            f"{old.name} version {old.version} cannot grow: it has no HGM projector and replay"
            " reservoir (trained without HGM, or before bundles kept them); train it again"
        )
    again = [m for m in config.modalities if m in old.modalities]
    if again:
        raise GrowthError(
            f"--add: {', '.join(again)} already in {old.name}; name only new modalities"
            " (anymodal update trains existing ones on new data)"
        )
    if config.model.feature_dim != old.head.feature_dim:
        raise GrowthError(
            f"--add: model.feature_dim is {config.model.feature_dim}, but {old.name}'s head reads"
            f" {old.head.feature_dim}: set feature_dim = {old.head.feature_dim}"
        )
    return list(config.modalities)


def _read(
    data: Path, old: Manifest, config: Config, skip_bad_rows: bool
) -> tuple[Tensors, Tensors, dict[str, int], dict[str, InputContract]]:
    """Train and validation tensors of the old modalities (with their own normalization) and the
    new ones (normalization fitted here); the old ones may be absent from the data. (A training row
    has to be read with the old modalities too: one without the new ones is not a bad row.)"""
    old_contracts = {m: spec.input for m, spec in old.modalities.items()}
    wanted = old_contracts | dict(config.modalities)
    splits = {}
    for name in ("train", "val"):
        splits[name], _ = read_split(data / f"{name}.jsonl", wanted, old.labels, skip_bad_rows)
        for m in config.modalities:
            if not splits[name].present(m).any():
                raise GrowthError(f"{data / name}.jsonl: no sample has the new modality {m!r}")
    contracts = old_contracts | fit_normalization(dict(config.modalities), splits["train"])
    samples = {name: len(split) for name, split in splits.items()}
    train, val = (Tensors.from_split(splits[name], contracts) for name in ("train", "val"))
    return train, val, samples, contracts


def _subset(data: Tensors, modalities: list[str]) -> Tensors:
    inputs, present = {m: data.inputs[m] for m in modalities}, {m: data.present[m] for m in modalities}
    return Tensors(inputs, present, data.labels)


def _old_features(bundle: Path, old: Manifest, data: Tensors) -> dict[str, np.ndarray]:
    """Each old modality's features on `data`, from its own ONNX encoder (which does not change)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    features = {}
    for m, spec in old.modalities.items():
        session = ort.InferenceSession(bundle / spec.file, options, providers=["CPUExecutionProvider"])
        out = np.zeros((len(data), old.head.feature_dim), np.float32)
        rows = data.present[m].nonzero().squeeze(1).numpy()
        for chunk in np.array_split(rows, max(1, math.ceil(len(rows) / 512))):
            if len(chunk):
                out[chunk] = session.run(["features"], {"input": data.inputs[m][chunk].numpy()})[0]
        features[m] = out
    return features


@torch.no_grad()
def _val_logits(
    model: MultimodalModel, val: Tensors, old_val: dict[str, np.ndarray], old: Manifest
) -> tuple[np.ndarray, np.ndarray]:
    """(N, M, C) logits of the old modalities then the new, and (N, M) presence."""
    model.eval()
    columns, present = [], []
    for m in old.modalities:
        columns.append(model.head(torch.from_numpy(old_val[m])).numpy())
        present.append(val.present[m].numpy())
    for m in model.modalities:
        logits = np.zeros((len(val), len(old.labels)), np.float32)
        rows = val.present[m].nonzero().squeeze(1)
        for chunk in rows.split(512):
            logits[chunk.numpy()] = model.logits(m, val.inputs[m][chunk]).numpy()
        columns.append(logits)
        present.append(val.present[m].numpy())
    return np.stack(columns, axis=1), np.stack(present, axis=1)


def _val_nll(model: MultimodalModel, val: Tensors, old_val: dict[str, np.ndarray], old: Manifest) -> float:
    logits, present = _val_logits(model, val, old_val, old)
    temperatures = np.array([s.temperature for s in old.modalities.values()] + [1.0] * len(model.modalities))
    rows = present.any(axis=1)
    fused = fuse(logits[rows], present[rows], temperatures, old.fusion.rule)
    log_p = log_softmax(fused.logits.astype(np.float64))
    return float(-log_p[np.arange(len(log_p)), val.labels.numpy()[rows]].mean())


def protect(projector: HeadGradientProjector, reservoir: Reservoir, modalities: list[str]) -> None:
    """Close, in the saved projector, each class's mean feature direction of every old modality.
    MLA's projector folds in batch means, which all point much the same way: it protects the old
    modalities' average feature, not what tells their classes apart."""
    for m in modalities:
        features, labels = torch.from_numpy(reservoir.features[m]), reservoir.labels[m]
        for label in np.unique(labels):
            projector.update(features[labels == label], alpha=PROTECT_ALPHA)


def _train(
    model: MultimodalModel,
    train: Tensors,
    val: Tensors,
    old_val: dict[str, np.ndarray],
    old: Manifest,
    reservoir: Reservoir,
    projector: HeadGradientProjector,
    config: Config,
    seed: int,
) -> None:
    """The new encoders and the projected head, best validation epoch kept (in place)."""
    settings = config.train
    encoder_opt = torch.optim.Adam(
        model.encoders.parameters(), lr=settings.encoder_lr, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(encoder_opt, settings.epochs)
    head_opt = HeadOptimizer(model.head, settings.head_lr, settings.head_momentum, projector)
    shuffle = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    replayed = [m for m in old.modalities if m in reservoir.features]
    protect(projector, reservoir, replayed)
    teacher = copy.deepcopy(model.head).eval()  # the old head: what the old modalities predicted
    best = BestEpoch(model, projector, settings.patience)
    for epoch in range(1, settings.epochs + 1):
        model.train()
        for batch in torch.randperm(len(train), generator=shuffle).split(settings.batch_size):
            for m in model.modalities:
                rows = batch[train.present[m][batch]]
                if len(rows) >= 2:  # batch norm needs two samples
                    unimodal_step(model, m, train.inputs[m][rows], train.labels[rows], encoder_opt, head_opt)
            if replayed:  # distillation: the head answers the old features as the old head did
                replay_step(head_opt, teacher, reservoir, replayed, settings.batch_size, rng)
        schedule.step()
        head_opt.anneal(settings.head_lr, epoch, settings.epochs)
        nll = _val_nll(model, val, old_val, old)
        log.debug("extend epoch %d: validation NLL %.4f", epoch, nll)
        if best.record(nll):
            break
    best.restore()
    model.eval()
