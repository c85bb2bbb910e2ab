"""Held-out corruptions for robustness evaluation: what breaks in the field, never seen in training.

Training degrades its inputs with background noise, occluding rectangles, gaussian pixel noise,
faded ink, keyboard typos, random case and a fixed list of unrelated short strings
(training/degrade.py). Every family here is a different kind of failure, so a score on them
measures robustness to the unforeseen rather than memorised augmentation. Training never imports
this package, and this package imports nothing from training.

FROZEN: every reported robustness number depends on exactly what these functions do, down to the
order in which they draw random numbers. Never change an existing family or its severities; add
new families, under new names, instead.

A family takes a decoded signal (what service.decoding.decode returns), a severity in SEVERITIES
and a numpy Generator. Its randomness is drawn the same way at every severity and then applied
more widely as severity grows, so for one seed a higher severity damages more than a lower one.
The families for each kind live in evaluation/corruptions_<kind>.py; `corrupt` checks the
arguments and makes every result valid for the contract.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from anymodal.evaluation import corruptions_audio, corruptions_image, corruptions_tensor, corruptions_text
from anymodal.service.manifest import (
    AudioContract,
    ImageContract,
    InputContract,
    TensorContract,
    TextContract,
)

SEVERITIES = (1, 2, 3)

Family = Callable[[Any, Any, int, np.random.Generator], Any]
_FAMILIES: dict[str, Mapping[str, Family]] = {
    "image": corruptions_image.FAMILIES,
    "audio": corruptions_audio.FAMILIES,
    "text": corruptions_text.FAMILIES,
    "tensor": corruptions_tensor.FAMILIES,
}


def families(kind: str) -> tuple[str, ...]:
    """The corruption families for a modality kind: "image", "audio", "text" or "tensor"."""
    if kind not in _FAMILIES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(_FAMILIES)}")
    return tuple(_FAMILIES[kind])


def corrupt(
    signal: Any, contract: InputContract, family: str, severity: int, rng: np.random.Generator
) -> Any:
    """Apply `family` at `severity` to a decoded signal; the result is a new signal valid for `contract`.

    Deterministic given `rng`; the input is never modified. Raises ValueError for a family the
    contract's kind does not have, or a severity outside SEVERITIES.
    """
    table = _FAMILIES[contract.kind]
    if family not in table:
        raise ValueError(f"unknown {contract.kind} corruption {family!r}; expected one of {sorted(table)}")
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    apply = table[family]
    severity = int(severity)
    match contract:
        case ImageContract():
            out = apply(np.array(signal, dtype=np.float64), contract, severity, rng)
            return np.clip(np.round(out), 0, 255).astype(np.uint8)
        case AudioContract():
            wave = np.array(signal, dtype=np.float64).reshape(-1)
            out = apply(wave if len(wave) else np.zeros(1), contract, severity, rng)
            out = np.clip(np.nan_to_num(out[: contract.max_samples]), -1.0, 1.0)
            return (out if len(out) else np.zeros(1)).astype(np.float32)
        case TextContract():
            text = apply(str(signal), contract, severity, rng)
            # Cut to the byte limit on a character boundary; never return an empty or blank text.
            text = text.encode("utf-8")[: contract.max_length].decode("utf-8", errors="ignore")
            return text if text.strip() else "?"
        case TensorContract():
            out = apply(np.array(signal, dtype=np.float64), contract, severity, rng)
            limit = float(np.finfo(np.float32).max)
            return np.clip(np.nan_to_num(out), -limit, limit).astype(np.float32)
    raise TypeError(f"unknown contract {contract!r}")
