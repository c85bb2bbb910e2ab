"""The training loops: MLA (alternating unimodal steps through the shared head, with HGM), and the
baselines it is measured against, joint training and one unimodal model per modality.

MLA, per mini-batch, for each modality m in turn: the samples of the batch that have m go through
m's encoder and the shared head; cross-entropy; backward; optimizer step, the head's step projected
by HGM; the projector takes in m's batch-mean feature. A sample missing m simply sits out m's step,
so incomplete data trains the modalities it has.

Every epoch is validated by the negative log-likelihood of the fused prediction (accuracy
saturates early and cannot tell epochs apart); the epoch with the lowest one is kept.

Joint training puts every present modality through its encoder and the head at once and trains
on the sum of their logits, the usual recipe that lets one dominant modality do the work.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from anymodal.service.fusion import FusionRule
from anymodal.training.config import TrainConfig
from anymodal.training.evaluate import Tensors, fused_accuracy, fused_nll, modality_logits, own_accuracy
from anymodal.training.hgm import HeadGradientProjector, HeadOptimizer
from anymodal.training.model import MultimodalModel
from tqdm import tqdm

log = logging.getLogger(__name__)
Method = Literal["mla", "joint"]


@dataclass
class History:
    """What each epoch measured, and the epoch whose weights were kept."""

    name: str
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_nll: float = math.inf
    best_val_accuracy: float = 0.0
    seconds: float = 0.0


def selection_rule(method: Method) -> FusionRule:
    """How a method's modalities are combined when it is validated: MLA by its entropy rule,
    joint training by the sum (equivalently the mean) of logits it was trained on."""
    return "entropy" if method == "mla" else "mean"


def train_model(
    model: MultimodalModel,
    train: Tensors,
    val: Tensors,
    config: TrainConfig,
    method: Method,
    hgm: bool,
    name: str,
    log_path: Path | None = None,
    progress: bool = True,
    projector: HeadGradientProjector | None = None,
) -> History:
    """Train `model` in place; on return it holds the weights of the best validation epoch. With
    HGM, `projector` (a fresh one if None) holds afterwards the directions every step used."""
    torch.manual_seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
    encoder_opt = torch.optim.Adam(
        model.encoders.parameters(), lr=config.encoder_lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(encoder_opt, config.epochs)
    if hgm and projector is None:
        projector = HeadGradientProjector(model.head.in_features, config.hgm_alpha)
    if not hgm:
        projector = None
    head_opt = HeadOptimizer(model.head, config.head_lr, config.head_momentum, projector)

    history = History(name=name)
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    started = time.perf_counter()
    bar = tqdm(total=config.epochs, desc=name, unit="epoch", leave=False, disable=not progress)
    for epoch in range(1, config.epochs + 1):
        model.train()
        epoch_started = time.perf_counter()
        totals = {m: np.zeros(3) for m in model.modalities}  # loss sum, correct, count
        kept = {m: [] for m in model.modalities}  # HGM: share of the head gradient kept, per step
        order = torch.randperm(len(train), generator=shuffle)
        batches = order.split(config.batch_size)
        for batch in batches:
            if method == "mla":
                for m in model.modalities:
                    rows = batch[train.present[m][batch]]
                    if len(rows) < 2:  # batch norm needs two samples
                        continue
                    loss, correct, share = unimodal_step(
                        model, m, train.inputs[m][rows], train.labels[rows], encoder_opt, head_opt
                    )
                    totals[m] += (loss * len(rows), correct, len(rows))
                    kept[m].append(share)
            else:
                for m, (loss, correct, count) in _joint_step(
                    model, train, batch, encoder_opt, head_opt
                ).items():
                    totals[m] += (loss * count, correct, count)
        schedule.step()
        head_opt.anneal(config.head_lr, epoch, config.epochs)

        logits = modality_logits(model, val)
        val_accuracy = own_accuracy(logits, val)
        val_fused = fused_accuracy(logits, val, rule=selection_rule(method))
        val_nll = fused_nll(logits, val, rule=selection_rule(method))
        record = {
            "model": name,
            "epoch": epoch,
            "seconds": round(time.perf_counter() - epoch_started, 2),
            "train": {
                m: {"loss": t[0] / max(t[2], 1), "accuracy": t[1] / max(t[2], 1)} for m, t in totals.items()
            },
            "val": {"fused_nll": val_nll, "fused_accuracy": val_fused, "accuracy": val_accuracy},
        }
        if projector is not None:
            record["hgm_kept"] = {m: float(np.mean(v)) for m, v in kept.items() if v}
        history.epochs.append(record)
        if log_path is not None:
            with log_path.open("a", encoding="utf-8") as stream:
                stream.write(json.dumps(record) + "\n")
        bar.update()
        bar.set_postfix_str(f"val nll {val_nll:.3f} acc {val_fused:.3f}")
        log.debug(
            "%s epoch %d: train %s | val fused nll %.4f acc %.4f, %s%s",
            name, epoch, _postfix(totals), val_nll, val_fused,
            " ".join(f"{m} {a:.3f}" for m, a in val_accuracy.items()),
            "".join(f" | hgm kept {m} {v:.2f}" for m, v in record.get("hgm_kept", {}).items()),
        )  # fmt: skip
        if val_nll < history.best_val_nll:
            history.best_epoch, history.best_val_nll, history.best_val_accuracy = epoch, val_nll, val_fused
            best_state = copy.deepcopy(model.state_dict())
            stale = 0
        else:
            stale += 1
            if stale >= config.patience:
                log.info("%s: no lower validation NLL for %d epochs, stopping", name, stale)
                break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - started
    log.info(
        "%s: %d epochs in %.0f s, best epoch %d (validation NLL %.4f, fused accuracy %.4f)",
        name, len(history.epochs), history.seconds, history.best_epoch, history.best_val_nll,
        history.best_val_accuracy,
    )  # fmt: skip
    return history


def unimodal_step(
    model: MultimodalModel,
    modality: str,
    x: torch.Tensor,
    y: torch.Tensor,
    encoder_opt: torch.optim.Optimizer,
    head_opt: HeadOptimizer,
) -> tuple[float, int, float]:
    """One step of one modality's encoder and the shared head; no other encoder is touched.
    Returns the loss, the correct count and the share of the head gradient HGM kept."""
    features = model.encoders[modality](x)
    logits = model.head(features)
    loss = F.cross_entropy(logits, y)
    encoder_opt.zero_grad(set_to_none=True)  # encoders without a gradient are left alone
    head_opt.zero_grad()
    loss.backward()
    encoder_opt.step()
    kept = head_opt.step()
    if head_opt.projector is not None:
        head_opt.projector.update(features)
    return loss.item(), int((logits.argmax(1) == y).sum()), kept


def _joint_step(
    model: MultimodalModel,
    data: Tensors,
    batch: torch.Tensor,
    encoder_opt: torch.optim.Optimizer,
    head_opt: HeadOptimizer,
) -> dict[str, tuple[float, int, int]]:
    """One step on the sum of every present modality's logits; returns each modality's own
    loss, correct count and sample count on the batch, for the progress bar."""
    y = data.labels[batch]
    summed = torch.zeros(len(batch), model.head.out_features)
    own: dict[str, tuple[float, int, int]] = {}
    for m in model.modalities:
        mask = data.present[m][batch]
        if mask.sum() < 2:
            continue
        logits = model.logits(m, data.inputs[m][batch[mask]])
        summed = summed.index_put((mask.nonzero().squeeze(1),), logits, accumulate=True)
        with torch.no_grad():
            own[m] = (
                F.cross_entropy(logits, y[mask]).item(),
                int((logits.argmax(1) == y[mask]).sum()),
                int(mask.sum()),
            )
    loss = F.cross_entropy(summed, y)
    encoder_opt.zero_grad(set_to_none=True)
    head_opt.zero_grad()
    loss.backward()
    encoder_opt.step()
    head_opt.step()
    return own


def _postfix(totals: dict[str, np.ndarray]) -> str:
    return " ".join(f"{m} loss {t[0] / t[2]:.3f} acc {t[1] / t[2]:.3f}" for m, t in totals.items() if t[2])
