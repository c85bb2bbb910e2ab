"""The MLA trainer's rules, on a tiny model: an alternating step touches only its modality's encoder
(and the shared head); samples missing a modality still train the others."""

import copy

import numpy as np
import torch
from anymodal.training.config import TrainConfig
from anymodal.training.evaluate import Tensors
from anymodal.training.hgm import HeadGradientProjector, HeadOptimizer
from anymodal.training.model import MultimodalModel
from anymodal.training.train import train_model, unimodal_step

from tests.helpers import CONTRACTS, SMALL, tiny_inputs


def _model() -> MultimodalModel:
    torch.manual_seed(0)
    return MultimodalModel(CONTRACTS, classes=3, config=SMALL)


def _optimizers(
    model: MultimodalModel, config: TrainConfig, projector: HeadGradientProjector | None = None
) -> tuple[torch.optim.Optimizer, HeadOptimizer]:
    """The optimizers `train_model` makes, at the learning rates of its first step."""
    return (
        torch.optim.Adam(model.encoders.parameters(), lr=config.encoder_lr, weight_decay=config.weight_decay),
        HeadOptimizer(model.head, config.head_lr, config.head_momentum, projector),
    )


def _changed(before: torch.nn.Module, after: torch.nn.Module) -> bool:
    state_before, state_after = before.state_dict(), after.state_dict()
    return any(not torch.equal(state_before[k], state_after[k]) for k in state_before)


def test_a_step_changes_only_the_active_encoder_and_the_head() -> None:
    model = _model()
    optimizers = _optimizers(model, TrainConfig(encoder_lr=1e-2, head_lr=0.1), HeadGradientProjector(8, 1.0))
    inputs = tiny_inputs(6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    for active in ("image", "text"):  # the second step runs with Adam state already present
        before = copy.deepcopy(model)
        unimodal_step(model, active, inputs[active], labels, *optimizers)
        # Exact: an encoder outside the step has no gradient, so the optimizer never touches it.
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
    # Equal within float32 rounding, which differs from CPU to CPU (rtol 1e-4, atol 1e-5): a row
    # taking part turns the gradient, and Adam's first step moves each parameter by about its
    # learning rate (2e-3) along the gradient's sign, so such a row shows far beyond the tolerance.
    alone = copy.deepcopy(untouched)
    alone.train()
    torch.manual_seed(config.seed)
    unimodal_step(alone, "audio", inputs["audio"][:4], labels[:4], *_optimizers(alone, config))
    trained = model.encoders["audio"].state_dict()
    unmoved_by_rows = _biases_before_batch_norm(alone.encoders["audio"])
    assert unmoved_by_rows  # the audio encoder's convolutions feed batch norms
    for key, value in alone.encoders["audio"].state_dict().items():
        if key not in unmoved_by_rows:
            torch.testing.assert_close(value, trained[key], rtol=1e-4, atol=1e-5, msg=key)


def _biases_before_batch_norm(encoder: torch.nn.Module) -> set[str]:
    """The biases of the layers a batch norm follows. The norm subtracts the batch mean, bias
    included, so no row moves them: their gradient is float rounding (about 1e-8, against Adam's
    eps of 1e-8), and Adam's step on it is weight decay plus noise that differs from CPU to CPU.
    They have nothing to tell about which rows took part."""
    layers = list(encoder.body)
    return {
        f"body.{i}.bias"
        for i in range(len(layers) - 1)
        if isinstance(layers[i + 1], torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)
        and getattr(layers[i], "bias", None) is not None
    }


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
