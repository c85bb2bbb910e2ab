"""Seeds: the same seed repeats a run exactly, another seed gives another model."""

import numpy as np
import torch
from anymodal.training.config import TrainConfig
from anymodal.training.evaluate import Tensors
from anymodal.training.model import MultimodalModel
from anymodal.training.train import train_model

from tests.helpers import CONTRACTS, SMALL, tiny_inputs


def _trained(seed: int) -> MultimodalModel:
    inputs = tiny_inputs(32, seed=3)
    present = {m: torch.from_numpy(np.random.default_rng(4).random(32) > 0.3) for m in CONTRACTS}
    present["pen"] |= ~torch.stack(list(present.values())).any(0)
    data = Tensors(inputs, present, torch.arange(32) % 3)
    torch.manual_seed(seed)
    model = MultimodalModel(CONTRACTS, classes=3, config=SMALL)
    train_model(
        model, data, data, TrainConfig(epochs=2, batch_size=8, seed=seed), "mla", True, "s", progress=False
    )
    return model


def test_the_same_seed_repeats_the_run_and_another_seed_changes_it() -> None:
    first, again, other = _trained(0), _trained(0), _trained(1)
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    differing = [
        k
        for k, v in first.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, other.state_dict()[k])
    ]
    assert "head.weight" in differing and len(differing) > len(first.state_dict()) // 2
