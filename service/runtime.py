"""onnxruntime sessions, created with deliberate options.

Each session runs with few threads and never spins: the service runs several sessions at once
(one per present modality, plus the head) and serves many requests, so parallelism comes from
running sessions side by side, not from each one grabbing every core and busy-waiting on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class SessionError(Exception):
    """A model file onnxruntime cannot load, or a provider that is asked for but absent."""


def providers_for(choice: str) -> list[str]:
    """`auto`: CUDA when onnxruntime-gpu is installed and sees a GPU, else CPU."""
    available = ort.get_available_providers()
    if choice == "cpu":
        return [CPU]
    if choice == "cuda" and CUDA not in available:
        raise SessionError("provider 'cuda' is asked for, but onnxruntime has no CUDA provider")
    return [CUDA, CPU] if CUDA in available else [CPU]


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


@dataclass
class Session:
    """One ONNX graph with a single input. Its outputs, each (batch, width), come back side by side
    as one array: an encoder's `features` then its `probes`, which the reliability gate reads."""

    path: Path
    session: ort.InferenceSession
    input_name: str
    output_names: list[str]
    input_dtype: type[np.generic]

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        outputs = self.session.run(
            self.output_names, {self.input_name: x.astype(self.input_dtype, copy=False)}
        )
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=1)


ONNX_TYPES: dict[str, type[np.generic]] = {"tensor(float)": np.float32, "tensor(int64)": np.int64}


def load_session(path: Path, providers: list[str], intra_op_threads: int) -> Session:
    try:
        session = ort.InferenceSession(path, session_options(intra_op_threads), providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for bad graphs
        raise SessionError(f"{path.name}: onnxruntime cannot load it ({error})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].type not in ONNX_TYPES:
        raise SessionError(f"{path.name}: expected one float or int64 input")
    if any(len(output.shape) != 2 or output.type != "tensor(float)" for output in outputs):
        raise SessionError(f"{path.name}: expected float outputs of shape (batch, width)")
    return Session(path, session, inputs[0].name, [o.name for o in outputs], ONNX_TYPES[inputs[0].type])
