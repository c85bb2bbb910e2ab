"""The robustness matrix: every non-empty subset of modalities x (clean, and each modality of the
subset corrupted by each family of the frozen suite at each severity), for one bundle.

Every bundle of a run sees the very same corrupted inputs (the corruptions' random draws depend
only on the modality, family and severity), so systems and seeds compare sample by sample.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from anymodal.evaluation.corruptions import SEVERITIES, corrupt, families
from anymodal.evaluation.runner import BundleRunner, ModalityOutputs, encoder_inputs
from anymodal.service.manifest import InputContract

CLEAN = "clean"
EVALUATION_SEED = 20261125


@dataclass(frozen=True)
class Cell:
    """One subset under one condition: per covered test sample, whether the answer was right, its
    score, and which present inputs the gate flagged."""

    samples: int  # test samples in the split
    rows: np.ndarray  # indices of the test samples covered (with at least one modality of the subset)
    correct: np.ndarray  # (n,) bool
    scores: np.ndarray  # (n,) the answer's score
    present: np.ndarray  # (n, M) bool: the inputs of the subset each sample has
    flagged: np.ndarray  # (n, M) bool: present and unreliable
    reliable: np.ndarray  # (n,) bool


def condition_name(modality: str, family: str, severity: int) -> str:
    return f"{modality}:{family}:{severity}"


def parse_condition(condition: str) -> tuple[str, str, int] | None:
    """(modality, family, severity), or None for clean."""
    if condition == CLEAN:
        return None
    modality, family, severity = condition.split(":")
    return modality, family, int(severity)


def subsets(modalities: list[str]) -> list[tuple[str, ...]]:
    return [s for size in range(1, len(modalities) + 1) for s in combinations(modalities, size)]


class TestInputs:
    """The test split's encoder inputs, clean and corrupted, computed once for every bundle."""

    def __init__(self, signals: dict[str, list[object | None]], contracts: dict[str, InputContract]) -> None:
        self.signals = signals
        self.contracts = contracts
        self.present = {m: np.array([s is not None for s in signals[m]]) for m in contracts}
        self._cache: dict[str, dict[str, np.ndarray]] = {}

    def conditions(self) -> list[str]:
        return [CLEAN] + [
            condition_name(m, family, severity)
            for m, contract in self.contracts.items()
            for family in families(contract.kind)
            for severity in SEVERITIES
        ]

    def inputs(self, modality: str, condition: str) -> np.ndarray:
        by_condition = self._cache.setdefault(modality, {})
        if condition not in by_condition:
            signals = self.signals[modality]
            parsed = parse_condition(condition)
            if parsed is not None:
                _, family, severity = parsed
                seed = [EVALUATION_SEED, zlib.crc32(f"{modality}:{family}".encode()), severity]
                rng = np.random.default_rng(seed)
                contract = self.contracts[modality]
                signals = [
                    None if s is None else corrupt(s, contract, family, severity, rng) for s in signals
                ]
            by_condition[condition] = encoder_inputs(signals, self.contracts[modality])
        return by_condition[condition]


def evaluate_bundle(
    runner: BundleRunner, data: TestInputs, labels: np.ndarray, gates: tuple[bool, ...] = (True, False)
) -> dict[bool, dict[tuple[tuple[str, ...], str], Cell]]:
    """{use_gate: {(subset, condition): Cell}} for every subset and every condition that corrupts
    a modality of the subset."""
    modalities = runner.modalities
    clean = {m: runner.run(m, data.inputs(m, CLEAN), data.present[m]) for m in modalities}
    outputs: dict[str, dict[str, ModalityOutputs]] = {CLEAN: clean}
    for condition in data.conditions()[1:]:
        m = condition.split(":")[0]
        outputs[condition] = clean | {m: runner.run(m, data.inputs(m, condition), data.present[m])}
    present = np.stack([data.present[m] for m in modalities], axis=1)
    results: dict[bool, dict[tuple[tuple[str, ...], str], Cell]] = {g: {} for g in gates}
    for subset in subsets(modalities):
        chosen = present & np.isin(modalities, subset)[None, :]
        rows = np.flatnonzero(chosen.any(axis=1))
        for condition, by_modality in outputs.items():
            parsed = parse_condition(condition)
            if parsed is not None and parsed[0] not in subset:
                continue
            for use_gate in gates:
                sliced = {
                    m: ModalityOutputs(o.logits[rows], o.p_values[rows]) for m, o in by_modality.items()
                }
                answers = runner.answer(sliced, chosen[rows], use_gate)
                results[use_gate][(subset, condition)] = Cell(
                    samples=len(labels),
                    rows=rows,
                    correct=answers.labels == labels[rows],
                    scores=answers.scores,
                    present=chosen[rows],
                    flagged=answers.gated.unreliable,
                    reliable=answers.gated.reliable,
                )
    return results
