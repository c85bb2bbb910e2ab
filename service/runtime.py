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
    """One ONNX graph with a single input and a single output."""

    path: Path
    session: ort.InferenceSession
    input_name: str
    output_name: str
    input_dtype: type[np.generic]

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(
            [self.output_name], {self.input_name: x.astype(self.input_dtype, copy=False)}
        )[0]


ONNX_TYPES: dict[str, type[np.generic]] = {"tensor(float)": np.float32, "tensor(int64)": np.int64}


def load_session(path: Path, providers: list[str], intra_op_threads: int) -> Session:
    try:
        session = ort.InferenceSession(path, session_options(intra_op_threads), providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for bad graphs
        raise SessionError(f"{path.name}: onnxruntime cannot load it ({error})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1 or inputs[0].type not in ONNX_TYPES:
        raise SessionError(f"{path.name}: expected one float or int64 input and one output")
    return Session(path, session, inputs[0].name, outputs[0].name, ONNX_TYPES[inputs[0].type])
