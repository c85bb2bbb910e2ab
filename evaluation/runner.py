"""A bundle run the way the service runs it: the manifest's contracts turn signals into encoder
inputs (`service/features.py`), onnxruntime runs the exported encoders and head
(`service/runtime.py`), the reliability gate scores the probes (`service/reliability.py`), and the
service's gate rule and fusion combine the modalities (`service/reliability.gate`,
`service/fusion.fuse`). Evaluation measures exactly what users get, not the torch model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from anymodal.service.features import features, input_dtype, input_shape
from anymodal.service.fusion import Fused, FusionRule, fuse, softmax
from anymodal.service.manifest import InputContract, Manifest, verify_bundle
from anymodal.service.reliability import Gated, ReliabilityModel, gate
from anymodal.service.repository import load_gate
from anymodal.service.runtime import CPU, Session, load_session

CHUNK = 512


@dataclass(frozen=True)
class ModalityOutputs:
    logits: np.ndarray  # (N, C), zeros where the modality is absent
    p_values: np.ndarray  # (N,) the gate's p-values, NaN where absent or without a gate


@dataclass(frozen=True)
class Answers:
    """What the service answers for every sample of a set of modalities."""

    fused: Fused
    gated: Gated
    probabilities: np.ndarray  # (N, C)

    @property
    def labels(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def scores(self) -> np.ndarray:
        return self.probabilities.max(axis=1)


def encoder_inputs(signals: list[object | None], contract: InputContract) -> np.ndarray:
    """(N, ...) encoder inputs, zeros where a signal is absent."""
    batch = np.zeros((len(signals), *input_shape(contract)), dtype=input_dtype(contract))
    for i, signal in enumerate(signals):
        if signal is not None:
            batch[i] = features(signal, contract)
    return batch


class BundleRunner:
    def __init__(self, bundle: Path, threads: int = 0) -> None:
        self.bundle = bundle
        self.manifest: Manifest = verify_bundle(bundle)
        self.modalities = list(self.manifest.modalities)
        self.sessions: dict[str, Session] = {
            m: load_session(bundle / spec.file, [CPU], threads)
            for m, spec in self.manifest.modalities.items()
        }
        self.head = load_session(bundle / self.manifest.head.file, [CPU], threads)
        self.gates: dict[str, ReliabilityModel] = {
            m: load_gate(bundle / spec.reliability.file)
            for m, spec in self.manifest.modalities.items()
            if spec.reliability is not None
        }
        specs = self.manifest.modalities.values()
        self.temperatures = np.array([spec.temperature for spec in specs])
        self.alphas = np.array([spec.reliability.alpha if spec.reliability else 0.0 for spec in specs])

    @property
    def contracts(self) -> dict[str, InputContract]:
        return {m: spec.input for m, spec in self.manifest.modalities.items()}

    def run(self, modality: str, inputs: np.ndarray, present: np.ndarray) -> ModalityOutputs:
        """One modality's logits and p-values for the encoder inputs of the present rows."""
        classes = len(self.manifest.labels)
        width = self.manifest.head.feature_dim
        logits = np.zeros((len(inputs), classes), dtype=np.float32)
        p_values = np.full(len(inputs), np.nan)
        rows = np.flatnonzero(present)
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            out = self.sessions[modality].run(inputs[chunk])
            logits[chunk] = self.head.run(np.ascontiguousarray(out[:, :width]))
            if modality in self.gates:
                gate_ = self.gates[modality]
                p_values[chunk] = gate_.p_value(gate_.score(out[:, width:]))
        return ModalityOutputs(logits, p_values)

    def answer(
        self,
        outputs: dict[str, ModalityOutputs],
        present: np.ndarray,
        use_gate: bool = True,
        rule: FusionRule | None = None,
    ) -> Answers:
        """Fuse `outputs` (by modality) over `present` (N, M) as the service would."""
        logits = np.stack([outputs[m].logits for m in self.modalities], axis=1)
        p_values = np.stack([outputs[m].p_values for m in self.modalities], axis=1)
        alphas = self.alphas if use_gate else np.zeros(len(self.modalities))
        gated = gate(present, p_values, alphas)
        fusion = self.manifest.fusion
        fused = fuse(logits, gated.usable, self.temperatures, rule or fusion.rule, fusion.temperatures)
        return Answers(fused, gated, softmax(fused.logits.astype(np.float64)))
