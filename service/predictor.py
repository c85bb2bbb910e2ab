"""The prediction pipeline, shared by every API route and the in-process benchmark:

    raw inputs -> decode + features -> the present modalities' encoders -> the shared head
    -> the reliability gate -> per-sample fusion -> predictions

A request is a job for its model's `Batcher` (`service/batching.py`): it runs at once, in a
worker thread, when the pipeline has a free slot, and otherwise together with the other requests
that queued meanwhile, each encoder and the head running once over all of their rows. Only the
encoders of the modalities present are run. An unusable input rejects its request (only its own:
not the others of the batch) or, with `on_invalid="drop"`, is left out of the fusion and reported
as dropped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from itertools import groupby

import numpy as np
from anymodal.service import metrics
from anymodal.service.batching import Batcher
from anymodal.service.decoding import InputError, decode_input
from anymodal.service.features import features
from anymodal.service.fusion import fuse, log_softmax, softmax
from anymodal.service.manifest import InputContract, TooLong
from anymodal.service.predictions import (
    GateResult,
    InvalidInputs,
    ModalityOutcome,
    Options,
    Prediction,
    State,
    Verdicts,
)
from anymodal.service.reliability import gate
from anymodal.service.repository import HEAD, LoadedModel
from anymodal.service.settings import Settings

__all__ = ["GateResult", "InvalidInputs", "Options", "Prediction", "Predictor"]


def decode_value(
    value: object, contract: InputContract, field: str, max_pixels: int, too_long: TooLong | None = None
) -> tuple[np.ndarray, bool]:
    """One raw input -> its encoder input, and whether it was cropped to fit the contract. An
    InputError in place of a value is an input the API layer already found unusable."""
    if isinstance(value, InputError):
        raise value
    decoded = decode_input(value, contract, field, max_pixels, too_long)
    return features(decoded.signal, contract), decoded.cropped


@dataclass(frozen=True)
class Job:
    """One request: `instances[i]` maps modality names to raw values (None or absent: missing);
    `fields[i]` is how errors name instance i (`inputs`, `instances[2]`, ...)."""

    instances: list[Mapping[str, object]]
    fields: list[str]
    options: Options


@dataclass
class Decoded:
    """A job's usable encoder inputs by modality and instance, its unusable inputs, and the
    (instance, modality) inputs that were cropped to fit their contract."""

    job: Job
    inputs: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    errors: dict[tuple[int, str], InputError] = field(default_factory=dict)
    cropped: set[tuple[int, str]] = field(default_factory=set)

    @classmethod
    def merge(cls, parts: list[Decoded]) -> Decoded:
        """Several jobs' inputs as one batch, instance i of part p numbered after all of p's
        predecessors' instances."""
        merged = cls(Job([], [], parts[0].job.options))
        for part in parts:
            offset = len(merged.job.instances)
            merged.job.instances.extend(part.job.instances)
            merged.job.fields.extend(part.job.fields)
            for m, good in part.inputs.items():
                merged.inputs.setdefault(m, {}).update({offset + i: x for i, x in good.items()})
            merged.errors.update({(offset + i, m): e for (i, m), e in part.errors.items()})
            merged.cropped.update((offset + i, m) for i, m in part.cropped)
        return merged

    def shifted(self, first: int, last: int) -> Decoded:
        """Instances first..last-1 renumbered from 0 (their errors and crops; no inputs)."""
        return Decoded(
            Job(self.job.instances[first:last], self.job.fields[first:last], self.job.options),
            errors={(i - first, m): e for (i, m), e in self.errors.items() if first <= i < last},
            cropped={(i - first, m) for i, m in self.cropped if first <= i < last},
        )


def _fusion_options(options: Options) -> tuple[str, str, int]:
    """The options that the gate and the fusion read: jobs that agree on them are fused together."""
    return (options.fusion or "", options.reliability, options.top_k)


class Predictor:
    """Runs requests through their model's pipeline in `executor`, batched as the settings say."""

    def __init__(self, executor: Executor, settings: Settings) -> None:
        self.executor = executor
        self.settings = settings
        self.max_pixels = settings.max_image_pixels

    async def predict(
        self,
        model: LoadedModel,
        instances: list[Mapping[str, object]],
        fields: list[str],
        options: Options,
    ) -> list[Prediction]:
        """Predict every instance, or raise InvalidInputs naming every unusable input."""
        return await self._batcher(model).submit(Job(instances, fields, options), len(instances))

    def _batcher(self, model: LoadedModel) -> Batcher[Job, list[Prediction]]:
        if model.batcher is None:
            model.batcher = Batcher(
                lambda jobs: self.run(model, jobs),
                self.executor,
                metrics.BatchMetrics(model.name),
                enabled=self.settings.batching,
                max_batch_size=self.settings.max_batch_size,
                concurrency=self.settings.concurrency,
            )
        return model.batcher

    def run(self, model: LoadedModel, jobs: list[Job]) -> list[list[Prediction] | Exception]:
        """The whole pipeline over a batch of jobs, synchronously: each job's predictions, or the
        InvalidInputs that rejects it. The jobs' instances are merged into one batch; the gate and
        the fusion run once per group of jobs that ask for the same options."""
        results: list[list[Prediction] | Exception] = [[] for _ in jobs]
        accepted: list[tuple[int, Decoded]] = []
        for k, job in enumerate(jobs):
            decoded = self._decode(model, job)
            try:
                self._check(job.instances, job.fields, decoded.inputs, decoded.errors, job.options)
            except InvalidInputs as error:
                self._count(model, job.instances, decoded.errors, rejected=True)
                results[k] = error
                continue
            accepted.append((k, decoded))
        if not accepted:
            return results
        accepted.sort(key=lambda item: _fusion_options(item[1].job.options))  # groups run as slices
        batch = Decoded.merge([decoded for _, decoded in accepted])
        logits, scores = self._encode(model, batch)
        present = np.array(
            [[inst.get(m) is not None and (i, m) not in batch.errors for m in model.modalities]
             for i, inst in enumerate(batch.job.instances)]
        )  # fmt: skip
        unreliable = np.zeros_like(present)
        spans, start = [], 0
        for k, decoded in accepted:
            spans.append((k, decoded.job.options, start, start + len(decoded.job.instances)))
            start = spans[-1][3]
        for _, group in groupby(spans, key=lambda span: _fusion_options(span[1])):
            members = list(group)
            options, first, last = members[0][1], members[0][2], members[-1][3]
            verdicts = self._gate(model, present[first:last], scores[first:last], options)
            unreliable[first:last] = verdicts.gated.unreliable
            predictions = self._fuse(
                model, logits[first:last], present[first:last], verdicts, batch.shifted(first, last), options
            )
            for k, _, a, b in members:
                results[k] = predictions[a - first : b - first]
        self._count(model, batch.job.instances, batch.errors, rejected=False, unreliable=unreliable)
        return results

    def _decode(self, model: LoadedModel, job: Job) -> Decoded:
        decoded = Decoded(job)
        for modality in model.modalities:
            present = [i for i, inst in enumerate(job.instances) if inst.get(modality) is not None]
            if not present:
                continue
            contract = model.manifest.modalities[modality].input
            started = time.perf_counter()
            good = decoded.inputs[modality] = {}
            for i in present:
                try:
                    good[i], was_cropped = decode_value(
                        job.instances[i][modality],
                        contract,
                        f"{job.fields[i]}.{modality}",
                        self.max_pixels,
                        job.options.audio_too_long,
                    )
                    if was_cropped:
                        decoded.cropped.add((i, modality))
                except InputError as error:
                    decoded.errors[(i, modality)] = error
            metrics.child(metrics.DECODE_DURATION, model.name, modality).observe(
                time.perf_counter() - started
            )
        return decoded

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
    def _encode(model: LoadedModel, batch: Decoded) -> tuple[np.ndarray, np.ndarray]:
        """Each encoder once over its modality's rows, then the head once over every (instance,
        modality) pair: (B, M, C) logits, zeros where absent, and (B, M) reliability scores of the
        inputs whose modality has a gate, NaN elsewhere. An encoder's output is its features, then
        the probes its gate scores."""
        width = model.manifest.head.feature_dim
        count = len(batch.job.instances)
        logits = np.zeros((count, len(model.modalities), len(model.manifest.labels)), np.float32)
        scores = np.full((count, len(model.modalities)), np.nan)
        encoded, placed = [], []  # encoder features, and the (modality, instances) of their rows
        for j, m in enumerate(model.modalities):
            chosen = sorted(batch.inputs.get(m, {}))
            if not chosen:
                continue
            out = _run(model, m, np.stack([batch.inputs[m][i] for i in chosen]))
            encoded.append(out[:, :width])
            placed.append((j, chosen))
            if m in model.gates:
                scores[chosen, j] = model.gates[m].score(out[:, width:])
        out = _run(model, HEAD, np.concatenate(encoded))
        offset = 0
        for j, chosen in placed:
            logits[chosen, j] = out[offset : offset + len(chosen)]
            offset += len(chosen)
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
        inputs: Decoded,
        options: Options,
    ) -> list[Prediction]:
        """Fuse each instance's usable modalities; `inputs` holds the instances' errors and crops."""
        modalities, labels = model.modalities, model.manifest.labels
        errors, cropped = inputs.errors, inputs.cropped
        gated = verdicts.gated
        temperatures, fusion = model.temperatures, model.manifest.fusion
        fused = fuse(logits, gated.usable, temperatures, options.fusion or fusion.rule, fusion.temperatures)
        probabilities = softmax(fused.logits.astype(np.float64))
        log_calibrated = log_softmax(logits.astype(np.float64) / temperatures[None, :, None])
        calibrated = np.exp(log_calibrated)
        entropies = -(calibrated * log_calibrated).sum(axis=-1)
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
                        metrics.child(metrics.RELIABILITY_SCORE, model.name, m).observe(verdict.score)
                    metrics.child(metrics.FUSION_WEIGHT, model.name, m).observe(fused.weights[i, j])
                    metrics.child(metrics.ENTROPY, model.name, m).observe(entropies[i, j])
                elif (i, m) in errors:
                    outcomes[m] = ModalityOutcome(state="dropped", reason=str(errors[(i, m)]))
                else:
                    outcomes[m] = ModalityOutcome(state="missing")
            combination = "+".join(m for j, m in enumerate(modalities) if gated.usable[i, j])
            metrics.child(metrics.COMBINATIONS, model.name, combination).inc()
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
                metrics.child(metrics.INPUTS, model.name, m, state).inc()


def _run(model: LoadedModel, component: str, rows: np.ndarray) -> np.ndarray:
    started = time.perf_counter()
    out = model.sessions[component].run(rows)
    metrics.child(metrics.INFERENCE_DURATION, model.name, component).observe(time.perf_counter() - started)
    metrics.child(metrics.BATCH_SIZE, model.name, component).observe(len(rows))
    return out
