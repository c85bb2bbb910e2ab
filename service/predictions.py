"""What a prediction is: the options a request sets, and the answer, with the account of each
modality (its state, weight, own vote and reliability verdict)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from anymodal.service.decoding import InputError
from anymodal.service.fusion import FusionRule
from anymodal.service.manifest import TooLong
from anymodal.service.reliability import Gated

OnInvalid = Literal["reject", "drop"]
Reliability = Literal["gate", "off"]
State = Literal["present", "missing", "invalid", "dropped", "unreliable"]


@dataclass(frozen=True)
class Options:
    fusion: FusionRule | None = None  # None: the model's own rule from its manifest
    top_k: int = 3
    on_invalid: OnInvalid = "reject"
    audio_too_long: TooLong | None = None  # None: each audio contract's own `too_long` policy
    reliability: Reliability = "gate"  # off: fuse every decodable input, whatever the gate says


@dataclass(frozen=True)
class GateResult:
    """The reliability gate's verdict on one input."""

    score: float
    p_value: float
    threshold: float


@dataclass(frozen=True)
class Verdicts:
    """The reliability gate on every input of a request, each p-value computed once."""

    gated: Gated
    scores: np.ndarray  # (B, M), NaN where no gate scored the input
    p_values: np.ndarray  # (B, M), NaN likewise
    thresholds: np.ndarray  # (M,) each modality's alpha, NaN for a modality without a gate

    def result(self, i: int, j: int) -> GateResult | None:
        if np.isnan(self.scores[i, j]):
            return None
        return GateResult(float(self.scores[i, j]), float(self.p_values[i, j]), float(self.thresholds[j]))


@dataclass(frozen=True)
class ModalityOutcome:
    state: State
    weight: float = 0.0
    label: str | None = None
    confidence: float | None = None  # the modality's own calibrated probability of its label
    entropy: float | None = None
    reason: str | None = None  # why an input was dropped
    cropped: bool = False  # a recording longer than its contract, cut to its loudest window
    reliability: GateResult | None = None  # for inputs of a modality with a gate


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    probabilities: np.ndarray  # (C,) softmax of the fused logits
    top_k: list[tuple[str, float]]
    modalities: dict[str, ModalityOutcome]
    reliable: bool = True  # False: every input failed the reliability gate; fused from them anyway

    @property
    def cropped(self) -> bool:
        """Whether any input of this instance was cropped to fit its contract."""
        return any(outcome.cropped for outcome in self.modalities.values())


class InvalidInputs(Exception):
    """Inputs that make the request unanswerable; every problem found, each naming its field."""

    def __init__(self, errors: list[InputError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors
