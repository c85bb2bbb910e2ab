"""`anymodal update BUNDLE --data DIR`: a served model learns from new samples of the modalities it
has (a new speaker, a new writer), limiting what it forgets of the old ones.

    old bundle (encoders' torch state, head, HGM projector P, replay reservoir)
    -> per mini-batch, for each modality trained: its unimodal step on the new samples (mixed with
       as many replayed old inputs, where the bundle keeps them: `replay_inputs`), plus a feature
       distillation term that keeps its features near those of its old encoder on the same inputs;
       batch norm statistics stay as they were; the head's update is projected through P (its old
       classes' mean directions closed further); then one replay step distils the old head's
       answers on the reservoir's features
    -> the epoch with the lowest fused NLL on the new validation split is kept
    -> every trained modality's encoder is exported anew with its gate refitted, on the new samples
       and the replayed inputs; the others are copied byte for byte. Temperatures stay: the new
       validation split is the new data's own, and calibrating there would make the model
       overconfident on everything else.

Without kept inputs an encoder's old inputs constrain nothing but its features on the new ones,
and an update forgets more (bench/update.py measures both). Which modalities train: `--modalities`,
by default every modality of the model that the new data has.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from anymodal.service.manifest import Manifest, ReliabilitySpec, verify_bundle
from anymodal.training.config import ModelConfig, TrainConfig
from anymodal.training.dataset import read_split
from anymodal.training.evaluate import Tensors, fused_nll, modality_logits
from anymodal.training.experiment import fit_gates
from anymodal.training.export import export_model, write_manifest
from anymodal.training.extend import next_version, protect
from anymodal.training.growth import (
    BestEpoch,
    GrowthError,
    Reservoir,
    encode,
    growth_spec,
    load_encoder,
    load_head,
    load_projector,
    replay_step,
    save_encoder,
    save_projector,
    step,
)
from anymodal.training.hgm import HeadGradientProjector, HeadOptimizer
from anymodal.training.model import MultimodalModel

log = logging.getLogger(__name__)
DISTILLATION = 1.0  # weight of the feature distillation term against the cross-entropy


def update(
    bundle: Path,
    data: Path,
    settings: TrainConfig,
    modalities: list[str] | None = None,
    skip_bad_rows: bool = False,
    guarded: bool = True,
    replay_inputs: bool = True,
) -> Path:
    """Train `bundle`'s model further on `data`; returns the new version's folder. `guarded=False`
    is plain fine-tuning on the new data alone (no projection, replay or distillation): the
    baseline the guards are measured against. `replay_inputs=False` leaves out the encoder inputs
    the bundle may keep (to measure what they bring)."""
    started = time.perf_counter()
    old = verify_bundle(bundle)
    growth = old.growth
    if growth is None or set(growth.encoders) != set(old.modalities):
        raise GrowthError(
            f"{old.name} version {old.version} cannot be updated: it does not keep its encoders'"
            " training state, HGM projector and replay reservoir; train it again with anymodal train"
        )
    torch.set_num_threads(settings.threads or os.cpu_count() or 1)
    torch.manual_seed(settings.seed)
    contracts = {m: spec.input for m, spec in old.modalities.items()}
    splits = {}
    for name in ("train", "val"):
        splits[name], _ = read_split(data / f"{name}.jsonl", contracts, old.labels, skip_bad_rows)
    trained = modalities or [m for m in old.modalities if splits["train"].present(m).any()]
    unknown = [m for m in trained if m not in old.modalities]
    if unknown or not trained:
        raise GrowthError(f"--modalities: name some of {', '.join(old.modalities)} (not {unknown or 'none'})")
    train, val = (Tensors.from_split(splits[name], contracts) for name in ("train", "val"))

    model = MultimodalModel(contracts, len(old.labels), _model_config(old))
    for m, weights in growth.encoders.items():
        model.encoders[m] = load_encoder(bundle, weights, contracts[m])
    model.head = load_head(bundle, old)
    projector = load_projector(bundle / growth.projector, settings.hgm_alpha)
    reservoir = Reservoir.load(bundle / growth.replay, growth.replay_size)
    replayed = {m: torch.from_numpy(reservoir.inputs[m]) for m in trained if m in reservoir.inputs}
    replayed = replayed if guarded and replay_inputs else {}
    for m in trained:
        if guarded and m not in replayed:
            log.warning(
                "%s: no replay inputs of it are used (the bundle keeps them with `replay_inputs = true`"
                " in its training config): its encoder learns from the new data alone, forgets more of"
                " the old, and its gate is refitted on the new data alone",
                m,
            )
    _train(model, trained, train, val, old, reservoir, replayed, projector if guarded else None, settings)

    out = next_version(bundle)
    out.mkdir()
    kept = [m for m in old.modalities if m not in trained]
    for m in kept:  # the encoders that did not train, and their gates, byte for byte
        spec = old.modalities[m]
        for file in (spec.file, growth.encoders[m].file, spec.reliability.file if spec.reliability else None):
            if file is not None:
                shutil.copy2(bundle / file, out / file)
    files = {m: old.modalities[m].file for m in kept}
    files |= export_model(_only(model, trained), {m: contracts[m] for m in trained}, out, val)
    reliability = {m: old.modalities[m].reliability for m in kept if old.modalities[m].reliability}
    reliability |= _fit_gates(_only(model, trained), train, val, reservoir, replayed, out, settings)
    encoders = {m: growth.encoders[m] for m in kept}
    for m in trained:
        encoders[m] = save_encoder(model.encoders[m], _model_config(old, m), out, m)
        if m in replayed:  # the kept samples' features, as the new encoder sees them
            reservoir.features[m] = encode(model.encoders[m], replayed[m]).numpy()
        rows = train.present[m].nonzero().squeeze(1)
        inputs = train.inputs[m][rows].numpy() if m in reservoir.inputs else None
        features = encode(model.encoders[m], train.inputs[m][rows])
        reservoir.add(m, features.numpy(), train.labels[rows].numpy(), settings.seed, inputs)
    spec = growth_spec(reservoir, encoders)
    save_projector(projector, out / spec.projector)
    reservoir.save(out / spec.replay)
    version, seconds = int(out.name), time.perf_counter() - started
    samples = {name: len(split) for name, split in splits.items()}
    write_manifest(
        out, name=old.name, version=version, labels=old.labels, contracts=contracts, files=files,
        temperatures={m: modality.temperature for m, modality in old.modalities.items()},
        reliability=reliability, feature_dim=old.head.feature_dim, rule=old.fusion.rule,
        count_temperatures=old.fusion.temperatures,
        training={"train": asdict(settings), "from_version": old.version, "seconds": round(seconds, 1)},
        data={"samples": samples}, metrics={}, growth=spec,
        history=[*old.history, step("update", version, model.modalities, trained, samples,
                                    {"train": asdict(settings), "guarded": guarded,
                                     "replayed_inputs": sorted(replayed)}, {},
                                    from_version=old.version)],
    )  # fmt: skip
    log.info(
        "updated %s version %d (%s) in %.0f s: version %d", old.name, old.version, trained, seconds, version
    )
    return out


def _model_config(old: Manifest, modality: str | None = None) -> ModelConfig:
    """The encoder sizes a modality (or, for the shared parts, the first one) was built with."""
    encoders = old.growth.encoders  # type: ignore[union-attr]
    return ModelConfig(**encoders[modality or next(iter(encoders))].model)


def _fit_gates(
    model: MultimodalModel,
    train: Tensors,
    val: Tensors,
    reservoir: Reservoir,
    replayed: dict[str, torch.Tensor],
    out: Path,
    settings: TrainConfig,
) -> dict[str, ReliabilitySpec]:
    """The gates of `model`'s (trained) modalities. Each learns what is typical from the new samples
    and half the replayed inputs (each repeated as often as the training samples it stands for:
    seen / kept), and its threshold from the new validation samples and the other half: the voices
    it heard before too."""
    fit, calibrate = (
        {m: (x[half::2], torch.from_numpy(reservoir.labels[m][half::2])) for m, x in replayed.items()}
        for half in (0, 1)
    )
    for m, (x, y) in fit.items():
        weight = max(1, round(reservoir.seen[m] / len(replayed[m])))
        fit[m] = (x.repeat_interleave(weight, dim=0), y.repeat_interleave(weight))
    return fit_gates(
        model, _with_replay(train, fit), _with_replay(val, calibrate), out, settings.reliability_alpha
    )


def _with_replay(split: Tensors, replayed: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Tensors:
    """`split` followed by the replayed (inputs, labels) of each modality, absent in the others."""
    extra = {m: len(x) for m, (x, _) in replayed.items()}
    inputs, present = {}, {}
    for m, x in split.inputs.items():
        added = [replayed[m][0] if m in replayed else torch.zeros((extra[o], *x.shape[1:]), dtype=x.dtype)
                 for o in extra]  # fmt: skip
        inputs[m] = torch.cat([x, *added])
        present[m] = torch.cat([split.present[m], *(torch.full((extra[o],), o == m) for o in extra)])
    labels = torch.cat([split.labels, *(y for _, y in replayed.values())])
    return Tensors(inputs=inputs, present=present, labels=labels)


def _only(model: MultimodalModel, modalities: list[str]) -> MultimodalModel:
    """A view of `model` with only `modalities`' encoders, for exporting and gating those."""
    view = copy.copy(model)
    view.modalities = modalities
    return view


def _train(
    model: MultimodalModel,
    trained: list[str],
    train: Tensors,
    val: Tensors,
    old: Manifest,
    reservoir: Reservoir,
    old_inputs: dict[str, torch.Tensor],
    projector: HeadGradientProjector | None,
    settings: TrainConfig,
) -> None:
    """The trained encoders and the head; with a projector, guarded against forgetting, and with
    `old_inputs` (by modality, labelled as in the reservoir) mixed into those steps."""
    guarded = projector is not None
    teachers = {m: copy.deepcopy(model.encoders[m]).eval() for m in trained}
    teacher_head = copy.deepcopy(model.head).eval()
    for m in model.modalities:
        model.encoders[m].requires_grad_(m in trained)
    encoder_opt = torch.optim.Adam(
        [p for m in trained for p in model.encoders[m].parameters()],
        lr=settings.encoder_lr,
        weight_decay=settings.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(encoder_opt, settings.epochs)
    head_opt = HeadOptimizer(model.head, settings.head_lr, settings.head_momentum, projector)
    replayed = [m for m in old.modalities if m in reservoir.features] if guarded else []
    if projector is not None:
        protect(projector, reservoir, replayed)
    shuffle, rng = torch.Generator().manual_seed(settings.seed), np.random.default_rng(settings.seed)
    temperatures = np.array([s.temperature for s in old.modalities.values()])
    best = BestEpoch(model, projector, settings.patience)
    for epoch in range(1, settings.epochs + 1):
        model.train()
        for m in model.modalities:
            if m not in trained:
                model.encoders[m].eval()  # frozen: batch norm statistics too
            elif guarded:  # the old samples' normalization, not the new ones'
                for layer in model.encoders[m].modules():
                    if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                        layer.eval()
        for batch in torch.randperm(len(train), generator=shuffle).split(settings.batch_size):
            for m in trained:
                rows = batch[train.present[m][batch]]
                if len(rows) < 2:  # batch norm needs two samples
                    continue
                x, y = train.inputs[m][rows], train.labels[rows]
                if m in old_inputs:
                    old_rows = torch.from_numpy(rng.choice(len(old_inputs[m]), len(rows)))
                    x = torch.cat([x, old_inputs[m][old_rows]])
                    y = torch.cat([y, torch.from_numpy(reservoir.labels[m][old_rows.numpy()])])
                features = model.encoders[m](x)
                with torch.no_grad():
                    target = teachers[m](x)
                loss = F.cross_entropy(model.head(features), y)
                if guarded:
                    loss = loss + DISTILLATION * F.mse_loss(features, target)
                encoder_opt.zero_grad(set_to_none=True)
                head_opt.zero_grad()
                loss.backward()
                encoder_opt.step()
                head_opt.step()
                if projector is not None:
                    projector.update(features)
            if replayed:  # the head answers the old features as the old head did
                replay_step(head_opt, teacher_head, reservoir, replayed, settings.batch_size, rng)
        schedule.step()
        head_opt.anneal(settings.head_lr, epoch, settings.epochs)
        if best.record(fused_nll(modality_logits(model, val), val, old.fusion.rule, temperatures)):
            break
    best.restore()
    model.eval()
