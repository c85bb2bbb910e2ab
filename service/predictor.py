"""The prediction pipeline, shared by every API route and the in-process benchmark:

    raw inputs -> decode + features (threads) -> the present modalities' encoders, concurrently
    (dynamically batched) -> the shared head (batched) -> per-sample fusion -> predictions

Only the encoders of the modalities a request has are run. An unusable input rejects the request
or, with `on_invalid="drop"`, is left out of the fusion and reported as dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from anymodal.service import metrics
from anymodal.service.decoding import InputError, decode_input
from anymodal.service.features import features
from anymodal.service.fusion import FusionRule, entropy, fuse, softmax
from anymodal.service.manifest import InputContract, TooLong
from anymodal.service.reliability import Gated, gate
from anymodal.service.repository import HEAD, LoadedModel

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


def decode_value(
    value: object, contract: InputContract, field: str, max_pixels: int, too_long: TooLong | None = None
) -> tuple[np.ndarray, bool]:
    """One raw input -> its encoder input, and whether it was cropped to fit the contract. An
    InputError in place of a value is an input the API layer already found unusable."""
    if isinstance(value, InputError):
        raise value
    decoded = decode_input(value, contract, field, max_pixels, too_long)
    return features(decoded.signal, contract), decoded.cropped


class Predictor:
    def __init__(self, decode_executor: Executor, max_pixels: int) -> None:
        self.decode_executor = decode_executor
        self.max_pixels = max_pixels

    async def predict(
        self,
        model: LoadedModel,
        instances: list[Mapping[str, object]],
        fields: list[str],
        options: Options,
    ) -> list[Prediction]:
        """Predict every instance. `instances[i]` maps modality names of the model to raw values
        (None or absent: missing); `fields[i]` is how errors name instance i (`inputs`, ...)."""
        rows = {
            m: [i for i, inst in enumerate(instances) if inst.get(m) is not None] for m in model.modalities
        }
        sent = [m for m in model.modalities if rows[m]]
        # Tell the batchers what is coming, so they wait for it (briefly) rather than run half-full.
        announced = {*sent, HEAD}
        for component in announced:
            model.batchers[component].expect()
        errors: dict[tuple[int, str], InputError] = {}
        try:
            inputs, errors, cropped = await asyncio.get_running_loop().run_in_executor(
                self.decode_executor, self._decode, model, instances, fields, rows, options.audio_too_long
            )
            for m in sent:
                if not inputs[m]:  # nothing usable: no encoder run for this modality after all
                    model.batchers[m].withdraw()
                    announced.discard(m)
            self._check(instances, fields, inputs, errors, options)
            encoded = await asyncio.gather(
                *(self._encode(model, m, inputs[m], announced) for m in inputs if inputs[m])
            )
            logits, scores = await self._head(model, len(instances), inputs, encoded, announced)
        except InvalidInputs:
            self._count(model, instances, errors, rejected=True)
            raise
        finally:
            for component in announced:
                model.batchers[component].withdraw()
        present = np.array(
            [[inst.get(m) is not None and (i, m) not in errors for m in model.modalities]
             for i, inst in enumerate(instances)]
        )  # fmt: skip
        verdicts = self._gate(model, present, scores, options)
        self._count(model, instances, errors, rejected=False, unreliable=verdicts.gated.unreliable)
        return self._fuse(model, logits, present, verdicts, errors, options, cropped)

    def _decode(
        self,
        model: LoadedModel,
        instances: list[Mapping[str, object]],
        fields: list[str],
        rows: dict[str, list[int]],
        too_long: TooLong | None,
    ) -> tuple[dict[str, dict[int, np.ndarray]], dict[tuple[int, str], InputError], set[tuple[int, str]]]:
        """Decode every input of the request (in a worker thread: one hop per request): encoder
        inputs by modality and instance, the unusable inputs, and the (instance, modality) inputs
        that were cropped to fit their contract."""
        inputs: dict[str, dict[int, np.ndarray]] = {}
        errors: dict[tuple[int, str], InputError] = {}
        cropped: set[tuple[int, str]] = set()
        for modality, present in rows.items():
            if not present:
                continue
            contract = model.manifest.modalities[modality].input
            started = time.perf_counter()
            good = inputs[modality] = {}
            for i in present:
                try:
                    good[i], was_cropped = decode_value(
                        instances[i][modality], contract, f"{fields[i]}.{modality}", self.max_pixels, too_long
                    )
                    if was_cropped:
                        cropped.add((i, modality))
                except InputError as error:
                    errors[(i, modality)] = error
            metrics.DECODE_DURATION.labels(model=model.name, modality=modality).observe(
                time.perf_counter() - started
            )
        return inputs, errors, cropped

    @staticmethod
    def _check(
        instances: list[Mapping[str, object]],
        fields: list[str],
        inputs: dict[str, dict[int, np.ndarray]],
        errors: dict[tuple[int, str], InputError],
        options: Options,
    ) -> None:
        """Reject the request if an input is unusable (unless dropping), or if an instance is left
        with no usable input at all."""
        if errors and options.on_invalid == "reject":
            raise InvalidInputs(list(errors.values()))
        empty = [i for i in range(len(instances)) if not any(i in good for good in inputs.values())]
        if empty:
            raise InvalidInputs(
                [
                    InputError(
                        fields[i],
                        "no usable input is left: "
                        + "; ".join(str(e) for (j, _), e in errors.items() if j == i),
                    )
                    for i in empty
                ]
            )

    @staticmethod
    async def _encode(
        model: LoadedModel, modality: str, arrays: dict[int, np.ndarray], announced: set[str]
    ) -> np.ndarray:
        batch = np.stack([arrays[i] for i in sorted(arrays)])
        announced.discard(modality)
        return await model.batchers[modality].submit(batch)

    @staticmethod
    async def _head(
        model: LoadedModel,
        count: int,
        inputs: dict[str, dict[int, np.ndarray]],
        encoded: list[np.ndarray],
        announced: set[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """One head run over every (instance, modality) pair: (B, M, C) logits, zeros where absent,
        and (B, M) reliability scores of the inputs whose modality has a gate, NaN elsewhere.
        An encoder's output is its features, then the probes its gate scores."""
        width = model.manifest.head.feature_dim
        logits = np.zeros((count, len(model.modalities), len(model.manifest.labels)), np.float32)
        scores = np.full((count, len(model.modalities)), np.nan)
        announced.discard(HEAD)
        out = await model.batchers[HEAD].submit(np.concatenate([e[:, :width] for e in encoded]))
        offset = 0
        for modality, rows in zip([m for m in inputs if inputs[m]], encoded, strict=True):
            j, chosen = model.modalities.index(modality), sorted(inputs[modality])
            logits[chosen, j] = out[offset : offset + len(rows)]
            if modality in model.gates:
                scores[chosen, j] = model.gates[modality].score(rows[:, width:])
            offset += len(rows)
        return logits, scores

    @staticmethod
    def _gate(model: LoadedModel, present: np.ndarray, scores: np.ndarray, options: Options) -> Verdicts:
        p_values = np.full(scores.shape, np.nan)
        thresholds = np.full(len(model.modalities), np.nan)
        for j, m in enumerate(model.modalities):
            spec = model.manifest.modalities[m].reliability
            if m in model.gates and spec is not None:
                p_values[:, j] = model.gates[m].p_value(scores[:, j])
                thresholds[j] = spec.alpha
        alphas = np.nan_to_num(thresholds) if options.reliability == "gate" else np.zeros(len(thresholds))
        return Verdicts(gate(present, p_values, alphas), scores, p_values, thresholds)

    @staticmethod
    def _fuse(
        model: LoadedModel,
        logits: np.ndarray,
        present: np.ndarray,
        verdicts: Verdicts,
        errors: dict[tuple[int, str], InputError],
        options: Options,
        cropped: set[tuple[int, str]],
    ) -> list[Prediction]:
        modalities, labels = model.modalities, model.manifest.labels
        gated = verdicts.gated
        temperatures, fusion = model.temperatures, model.manifest.fusion
        fused = fuse(logits, gated.usable, temperatures, options.fusion or fusion.rule, fusion.temperatures)
        probabilities = softmax(fused.logits.astype(np.float64))
        calibrated = softmax(logits.astype(np.float64) / temperatures[None, :, None])
        entropies = entropy(logits, temperatures[None, :, None])
        k = min(options.top_k, len(labels))
        predictions = []
        for i in range(len(logits)):
            order = np.argsort(-probabilities[i], kind="stable")[:k]
            outcomes: dict[str, ModalityOutcome] = {}
            for j, m in enumerate(modalities):
                if present[i, j]:
                    own = int(np.argmax(logits[i, j]))
                    verdict = verdicts.result(i, j)
                    outcomes[m] = ModalityOutcome(
                        state="unreliable" if gated.unreliable[i, j] else "present",
                        weight=float(fused.weights[i, j]),
                        label=labels[own],
                        confidence=float(calibrated[i, j, own]),
                        entropy=float(entropies[i, j]),
                        cropped=(i, m) in cropped,
                        reliability=verdict,
                    )
                    if verdict is not None:
                        metrics.RELIABILITY_SCORE.labels(model=model.name, modality=m).observe(verdict.score)
                    metrics.FUSION_WEIGHT.labels(model=model.name, modality=m).observe(fused.weights[i, j])
                    metrics.ENTROPY.labels(model=model.name, modality=m).observe(entropies[i, j])
                elif (i, m) in errors:
                    outcomes[m] = ModalityOutcome(state="dropped", reason=str(errors[(i, m)]))
                else:
                    outcomes[m] = ModalityOutcome(state="missing")
            combination = "+".join(m for j, m in enumerate(modalities) if gated.usable[i, j])
            metrics.COMBINATIONS.labels(model=model.name, combination=combination).inc()
            predictions.append(
                Prediction(
                    label=labels[int(order[0])],
                    score=float(probabilities[i, order[0]]),
                    probabilities=probabilities[i].astype(np.float32),
                    top_k=[(labels[int(c)], float(probabilities[i, c])) for c in order],
                    modalities=outcomes,
                    reliable=bool(gated.reliable[i]),
                )
            )
        return predictions

    @staticmethod
    def _count(
        model: LoadedModel,
        instances: list[Mapping[str, object]],
        errors: dict[tuple[int, str], InputError],
        rejected: bool,
        unreliable: np.ndarray | None = None,
    ) -> None:
        """Each instance counts each modality once: present, missing, invalid, dropped or unreliable."""
        for i, inst in enumerate(instances):
            for j, m in enumerate(model.modalities):
                if inst.get(m) is None:
                    state: State = "missing"
                elif (i, m) in errors:
                    state = "invalid" if rejected else "dropped"
                elif unreliable is not None and unreliable[i, j]:
                    state = "unreliable"
                else:
                    state = "present"
                metrics.INPUTS.labels(model=model.name, modality=m, state=state).inc()
