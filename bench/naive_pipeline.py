"""One instance through an anymodal bundle, written plainly: the work of anymodal's pipeline per
request, with anymodal's own functions (decoding, features, onnxruntime sessions, reliability gate,
fusion), but one instance at a time and no batching. The peers of bench/peers.py
(bench/naive_server.py, bench/mlserver_runtime.py) both run it.

Its sessions have the service's options (one thread per run, no spinning), not onnxruntime's
defaults (a thread per core, spinning while idle), which cost the peers more than they save: with
them, the naive server's p50 at concurrency 1 was several times longer (8 ms, not 2) on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anymodal.service.decoding import decode_input
from anymodal.service.features import features
from anymodal.service.fusion import fuse, softmax
from anymodal.service.manifest import read_manifest
from anymodal.service.reliability import ReliabilityModel, gate
from anymodal.service.runtime import CPU, load_session


class Pipeline:
    """One instance at a time: decode, features, each encoder, the head, the gate, the fusion."""

    def __init__(self, bundle: Path) -> None:
        self.manifest = read_manifest(bundle)
        specs = self.manifest.modalities
        self.encoders = {m: load_session(bundle / spec.file, [CPU], 1) for m, spec in specs.items()}
        self.head = load_session(bundle / self.manifest.head.file, [CPU], 1)
        self.gates = {
            m: ReliabilityModel.load(bundle / spec.reliability.file)
            for m, spec in specs.items()
            if spec.reliability is not None
        }
        self.temperatures = np.array([spec.temperature for spec in specs.values()])

    def predict(self, raw: dict[str, object]) -> dict[str, object]:
        """Modality -> the file's bytes or the text; absent modalities are missing."""
        manifest, width = self.manifest, self.manifest.head.feature_dim
        names = [m for m in manifest.modalities if raw.get(m) is not None]
        present = np.array([[m in names for m in manifest.modalities]])
        p_values = np.full(present.shape, np.nan)
        alphas = np.zeros(present.shape[1])
        encoded = []
        for m in names:
            spec = manifest.modalities[m]
            x = features(decode_input(raw[m], spec.input, m).signal, spec.input)[None]
            out = self.encoders[m].run(x)  # its features, then the probes its gate scores
            encoded.append(out[:, :width])
            if m in self.gates and spec.reliability is not None:
                j = list(manifest.modalities).index(m)
                p_values[0, j] = self.gates[m].p_value(self.gates[m].score(out[:, width:]))[0]
                alphas[j] = spec.reliability.alpha
        logits = np.zeros((1, len(manifest.modalities), len(manifest.labels)), np.float32)
        logits[0, present[0]] = self.head.run(np.concatenate(encoded))
        fusion = manifest.fusion
        usable = gate(present, p_values, alphas).usable
        fused = fuse(logits, usable, self.temperatures, fusion.rule, fusion.temperatures)
        probabilities = softmax(fused.logits[0].astype(np.float64))
        top = np.argsort(-probabilities, kind="stable")[:3]
        return {
            "label": manifest.labels[top[0]],
            "score": float(probabilities[top[0]]),
            "top_k": [{"label": manifest.labels[c], "probability": float(probabilities[c])} for c in top],
        }
