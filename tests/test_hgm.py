"""Head gradient modification: the augmented projector and the head optimizer that applies it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from anymodal.training.config import TrainConfig
from anymodal.training.evaluate import Tensors
from anymodal.training.hgm import HeadGradientProjector, HeadOptimizer, augment
from anymodal.training.model import MultimodalModel
from anymodal.training.train import train_model

from tests.helpers import CONTRACTS, SMALL, tiny_inputs


def _features(rows: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)).abs() * 10


def test_projector_starts_as_identity_and_leaves_the_first_update_alone() -> None:
    projector = HeadGradientProjector(8, alpha=1.0)
    update = torch.randn(3, 9)
    assert torch.equal(projector.project(update), update)


def test_after_updates_the_projector_closes_the_batch_mean_direction_bias_included() -> None:
    projector = HeadGradientProjector(16, alpha=1e-3)
    features = _features(32, 16, seed=0)
    r = augment(features.double()).mean(0, keepdim=True)
    projector.update(features)
    assert (projector.P @ r.T).norm() < 1e-2 * r.norm()
    assert projector.P.shape == (17, 17)


def test_alpha_does_not_depend_on_the_features_scale() -> None:
    """r is normalised: features 100 times larger close their direction exactly as much."""
    small, large = HeadGradientProjector(16, alpha=1.0), HeadGradientProjector(16, alpha=1.0)
    features = _features(32, 16, seed=1)
    small.update(features)
    large.update(features * 100)
    direction = augment(features.double()).mean(0)
    assert torch.allclose(
        small.P @ direction / direction.norm(), large.P @ direction / direction.norm(), atol=0.05
    )


def test_p_stays_symmetric_and_contracting() -> None:
    projector = HeadGradientProjector(16, alpha=1.0)
    for seed in range(20):
        projector.update(_features(8, 16, seed))
    P = projector.P
    assert torch.allclose(P, P.T, atol=1e-10)
    eigenvalues = torch.linalg.eigvalsh(P)
    assert eigenvalues.min() > -1e-9 and eigenvalues.max() <= 1.0 + 1e-9


def _step_moves(projector: HeadGradientProjector | None, earlier: torch.Tensor, later: torch.Tensor) -> float:
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 5)
    optimizer = HeadOptimizer(head, lr=0.1, momentum=0.9, projector=projector)
    before = head(earlier.mean(0, keepdim=True)).detach()
    for step in range(3):  # several steps, so momentum has something to carry
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(later), torch.full((len(later),), step % 5))
        loss.backward()
        optimizer.step()
    return float((head(earlier.mean(0, keepdim=True)).detach() - before).norm())


def test_projected_steps_leave_the_heads_output_on_earlier_features_unchanged_bias_and_momentum_included() -> (
    None
):
    earlier = _features(64, 16, seed=1)
    later = _features(64, 16, seed=2) + torch.linspace(0, 5, 16)
    projector = HeadGradientProjector(16, alpha=1e-4)
    projector.update(earlier)
    plain = _step_moves(None, earlier, later)
    projected = _step_moves(projector, earlier, later)
    assert plain > 1e-2
    assert projected < 1e-2 * plain


def test_the_optimizer_reports_the_share_of_the_gradient_hgm_keeps() -> None:
    head = torch.nn.Linear(16, 5)
    projector = HeadGradientProjector(16, alpha=1.0)
    optimizer = HeadOptimizer(head, lr=0.1, momentum=0.0, projector=projector)
    features = _features(32, 16, seed=3)
    loss = torch.nn.functional.cross_entropy(head(features), torch.zeros(32, dtype=torch.long))
    loss.backward()
    assert optimizer.step() == pytest.approx(1.0)  # P = I: everything kept
    projector.update(features)
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(head(features), torch.ones(32, dtype=torch.long)).backward()
    kept = optimizer.step()
    assert 0.0 < kept < 1.0
    head.zero_grad(set_to_none=True)
    assert HeadOptimizer(head, 0.1, 0.0, None).step() == 1.0  # no gradient, nothing to project


def test_alpha_must_be_positive() -> None:
    with pytest.raises(ValueError):
        HeadGradientProjector(4, alpha=0.0)


def test_hgm_keeps_a_substantial_share_of_the_head_gradient_all_through_training(tmp_path: Path) -> None:
    """With alpha on the scale of normalised features, the projector does not collapse: every
    epoch's log keeps a good part of each modality's head gradient (it kept 1-8% when alpha was
    1 against raw features of squared norm 36-540)."""
    data = Tensors(
        tiny_inputs(96, seed=5),
        {m: torch.ones(96, dtype=torch.bool) for m in CONTRACTS},
        torch.arange(96) % 3,
    )
    torch.manual_seed(0)
    model = MultimodalModel(CONTRACTS, classes=3, config=SMALL)
    log = tmp_path / "train_log.jsonl"
    train_model(
        model,
        data,
        data,
        TrainConfig(epochs=6, batch_size=16, patience=10),
        "mla",
        True,
        "h",
        log,
        progress=False,
    )
    epochs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(epochs) == 6
    for epoch in epochs:
        assert set(epoch["hgm_kept"]) == set(CONTRACTS)
        assert min(epoch["hgm_kept"].values()) > 0.15, epoch["hgm_kept"]
    assert np.mean(list(epochs[-1]["hgm_kept"].values())) < 1.0  # and it does project
