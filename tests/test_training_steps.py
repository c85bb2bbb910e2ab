"""The MLA trainer's rules, on a tiny model: an alternating step touches only its modality's encoder
(and the shared head); samples missing a modality still train the others."""

import copy

import numpy as np
import torch

from tests.helpers import CONTRACTS, SMALL, tiny_inputs
from training.config import TrainConfig
from training.evaluate import Tensors
from training.hgm import HeadGradientProjector
from training.model import MultimodalModel
from training.train import _unimodal_step, train_model


def _model() -> MultimodalModel:
    torch.manual_seed(0)
    return MultimodalModel(CONTRACTS, classes=3, config=SMALL)


def _optimizers(model: MultimodalModel) -> tuple[torch.optim.Optimizer, ...]:
    return (
        torch.optim.Adam(model.encoders.parameters(), lr=1e-2, weight_decay=1e-4),
        torch.optim.SGD(model.head.parameters(), lr=0.1, momentum=0.9),
    )


def _changed(before: torch.nn.Module, after: torch.nn.Module) -> bool:
    state_before, state_after = before.state_dict(), after.state_dict()
    return any(not torch.equal(state_before[k], state_after[k]) for k in state_before)


def test_a_step_changes_only_the_active_encoder_and_the_head() -> None:
    model = _model()
    optimizers = _optimizers(model)
    inputs = tiny_inputs(6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    for active in ("image", "text"):  # the second step runs with Adam state already present
        before = copy.deepcopy(model)
        _unimodal_step(model, active, inputs[active], labels, optimizers, HeadGradientProjector(8, 1.0))
        for name in CONTRACTS:
            assert _changed(before.encoders[name], model.encoders[name]) == (name == active), name
        assert _changed(before.head, model.head)


def test_samples_missing_a_modality_train_the_modalities_they_have() -> None:
    """Eight samples: four have only audio, four only text. One MLA epoch trains both encoders,
    and the audio encoder's update is the one those four audio-only samples give."""
    inputs = tiny_inputs(8)
    present = {
        "image": torch.zeros(8, dtype=torch.bool),
        "audio": torch.tensor([True] * 4 + [False] * 4),
        "text": torch.tensor([False] * 4 + [True] * 4),
        "pen": torch.zeros(8, dtype=torch.bool),
    }
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    data = Tensors(inputs, present, labels)
    config = TrainConfig(epochs=1, batch_size=8, hgm=False, patience=5)

    model = _model()
    untouched = copy.deepcopy(model)
    train_model(model, data, data, config, "mla", hgm=False, name="t", progress=False)
    assert _changed(untouched.encoders["audio"], model.encoders["audio"])
    assert _changed(untouched.encoders["text"], model.encoders["text"])
    assert not _changed(untouched.encoders["image"], model.encoders["image"])

    # The audio update equals a step on the audio-only samples alone: absent rows play no part.
    alone = copy.deepcopy(untouched)
    alone.train()
    optimizers = _optimizers(alone)
    optimizers[0].param_groups[0]["lr"] = config.encoder_lr
    optimizers[1].param_groups[0]["lr"] = config.head_lr
    torch.manual_seed(config.seed)
    _unimodal_step(alone, "audio", inputs["audio"][:4], labels[:4], optimizers, None)
    for key, value in alone.encoders["audio"].state_dict().items():
        assert torch.allclose(value.float(), model.encoders["audio"].state_dict()[key].float(), atol=1e-6), (
            key
        )


def test_joint_training_sums_only_present_modalities() -> None:
    inputs = tiny_inputs(8)
    present = {m: torch.ones(8, dtype=torch.bool) for m in CONTRACTS}
    present["image"] = torch.zeros(8, dtype=torch.bool)
    data = Tensors(inputs, present, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    model = _model()
    untouched = copy.deepcopy(model)
    train_model(model, data, data, TrainConfig(epochs=1, batch_size=8), "joint", False, "j", progress=False)
    assert not _changed(untouched.encoders["image"], model.encoders["image"])
    for name in ("audio", "text", "pen"):
        assert _changed(untouched.encoders[name], model.encoders[name])


def test_training_is_deterministic_given_the_seed() -> None:
    inputs = tiny_inputs(32, seed=3)
    present = {m: torch.from_numpy(np.random.default_rng(4).random(32) > 0.3) for m in CONTRACTS}
    present["pen"] |= ~torch.stack(list(present.values())).any(0)
    data = Tensors(inputs, present, torch.arange(32) % 3)
    config = TrainConfig(epochs=2, batch_size=8)
    first, second = _model(), _model()
    train_model(first, data, data, config, "mla", True, "a", progress=False)
    train_model(second, data, data, config, "mla", True, "b", progress=False)
    assert not _changed(first, second)
