"""Export a trained model to a bundle: one ONNX file per modality encoder, one for the head, and
`manifest.json` with the sha256 of every file. A parity check runs real test samples through
torch and onnxruntime and fails the export if their logits differ by more than 1e-4."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from service.manifest import (
    MANIFEST_NAME,
    HeadSpec,
    InputContract,
    Manifest,
    ModalitySpec,
    sha256_of,
)
from training.evaluate import Tensors
from training.model import MultimodalModel

log = logging.getLogger(__name__)
# The exporter warns on every call that torchvision's operators are not registered; no model uses them.
logging.getLogger("torch.onnx").setLevel(logging.ERROR)
PARITY_TOLERANCE = 1e-4
HEAD_FILE = "head.onnx"


class ExportError(Exception):
    pass


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, names: tuple[str, str]) -> None:
    """Write `module` as ONNX with a dynamic batch axis and check the file."""
    module.eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with warnings.catch_warnings():  # torch.export's own deprecation notices, not ours to fix
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            module,
            (example,),
            path,
            input_names=[names[0]],
            output_names=[names[1]],
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
        )
    onnx.checker.check_model(onnx.load(path), full_check=True)


def export_model(
    model: MultimodalModel, contracts: dict[str, InputContract], bundle: Path, parity: Tensors
) -> dict[str, str]:
    """Export every encoder and the head into `bundle`; returns modality -> ONNX file name.
    Raises ExportError if onnxruntime's logits differ from torch's on `parity` samples."""
    bundle.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for m in model.modalities:
        files[m] = f"{m}.onnx"
        example = _examples(parity, m, count=8)
        export_onnx(model.encoders[m], example, bundle / files[m], ("input", "features"))
    features = torch.zeros(2, model.head.in_features)
    export_onnx(model.head, features, bundle / HEAD_FILE, ("features", "logits"))
    check_parity(model, bundle, files, parity)
    return files


def _examples(data: Tensors, modality: str, count: int) -> torch.Tensor:
    rows = data.present[modality].nonzero().squeeze(1)[:count]
    if len(rows) == 0:
        raise ExportError(f"no sample with {modality!r} to export and check the encoder with")
    return data.inputs[modality][rows]


@torch.no_grad()
def check_parity(
    model: MultimodalModel, bundle: Path, files: dict[str, str], data: Tensors
) -> dict[str, float]:
    """Max absolute logit difference, torch vs onnxruntime, per modality on up to 256 real samples."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    head = ort.InferenceSession(bundle / HEAD_FILE, options, providers=["CPUExecutionProvider"])
    differences = {}
    for m, file in files.items():
        x = _examples(data, m, count=256)
        expected = model.logits(m, x).numpy()
        encoder = ort.InferenceSession(bundle / file, options, providers=["CPUExecutionProvider"])
        features = encoder.run(None, {"input": x.numpy()})[0]
        actual = head.run(None, {"features": features})[0]
        differences[m] = float(np.abs(actual - expected).max())
        if not differences[m] <= PARITY_TOLERANCE:
            raise ExportError(
                f"{m}: onnxruntime's logits differ from torch's by {differences[m]:.2e}"
                f" (tolerance {PARITY_TOLERANCE:g}); the export is not faithful"
            )
    log.info("export parity, max |logit difference| per modality: %s", differences)
    return differences


def write_manifest(
    bundle: Path,
    name: str,
    version: int,
    labels: list[str],
    contracts: dict[str, InputContract],
    files: dict[str, str],
    temperatures: dict[str, float],
    feature_dim: int,
    training: dict,
    data: dict,
    metrics: dict,
) -> Manifest:
    """Write `manifest.json`, hashing every other file in the bundle; validated before writing."""
    hashes = {
        path.relative_to(bundle).as_posix(): sha256_of(path)
        for path in sorted(bundle.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    manifest = Manifest(
        name=name,
        version=version,
        labels=labels,
        modalities={
            m: ModalitySpec(input=contracts[m], file=files[m], temperature=temperatures[m]) for m in contracts
        },
        head=HeadSpec(file=HEAD_FILE, feature_dim=feature_dim),
        files=hashes,
        training=training,
        data=data,
        metrics=metrics,
    )
    (bundle / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest
