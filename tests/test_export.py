"""ONNX export: files onnxruntime runs with any batch size, logits equal to torch's within 1e-4
(else the export fails), and a manifest whose checksums catch any changed file."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from anymodal.service.manifest import BundleError, verify_bundle
from anymodal.training.evaluate import Tensors
from anymodal.training.export import ExportError, check_parity, export_model, rewrite_manifest, write_manifest
from anymodal.training.model import MultimodalModel

from tests.helpers import CONTRACTS, SMALL, tiny_inputs


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[MultimodalModel, Path, dict, Tensors]:
    torch.manual_seed(0)
    model = MultimodalModel(CONTRACTS, classes=4, config=SMALL).eval()
    data = Tensors(tiny_inputs(20), {m: torch.ones(20, dtype=torch.bool) for m in CONTRACTS}, torch.zeros(20))
    bundle = tmp_path_factory.mktemp("bundle")
    files = export_model(model, CONTRACTS, bundle, data)
    return model, bundle, files, data


def test_every_encoder_and_the_head_run_in_onnxruntime_at_any_batch_size(exported) -> None:
    model, bundle, files, data = exported
    assert set(files) == set(CONTRACTS)
    head = ort.InferenceSession(bundle / "head.onnx", providers=["CPUExecutionProvider"])
    for modality, file in files.items():
        onnx.checker.check_model(onnx.load(bundle / file), full_check=True)
        encoder = ort.InferenceSession(bundle / file, providers=["CPUExecutionProvider"])
        assert encoder.get_inputs()[0].shape[0] == "batch"
        for batch in (1, 7):
            x = data.inputs[modality][:batch]
            features, probes = encoder.run(["features", "probes"], {"input": x.numpy()})
            logits = head.run(None, {"features": features})[0]
            with torch.no_grad():
                expected = model.logits(modality, x).numpy()
                expected_probes = model.encoders[modality].forward_with_probes(x)[1].numpy()
            assert logits.shape == (batch, 4)
            np.testing.assert_allclose(logits, expected, atol=1e-4)
            assert probes.shape == (batch, sum(model.encoders[modality].probe_widths()))
            np.testing.assert_allclose(probes, expected_probes, rtol=1e-4, atol=1e-4)


def test_parity_check_fails_an_unfaithful_export(exported) -> None:
    model, bundle, files, data = exported
    assert max(check_parity(model, bundle, files, data).values()) <= 1e-4
    drifted = MultimodalModel(CONTRACTS, classes=4, config=SMALL).eval()
    drifted.load_state_dict(model.state_dict())
    with torch.no_grad():
        drifted.head.bias.add_(0.01)
    with pytest.raises(ExportError, match="differ from torch's"):
        check_parity(drifted, bundle, files, data)


def test_manifest_lists_every_file_and_verification_catches_changes(exported, tmp_path: Path) -> None:
    _, source, files, _ = exported
    bundle = tmp_path / "tiny" / "1"
    bundle.mkdir(parents=True)
    for path in source.iterdir():
        (bundle / path.name).write_bytes(path.read_bytes())
    (bundle / "report.md").write_text("# report\n")
    manifest = write_manifest(
        bundle, "tiny", 1, ["a", "b", "c", "d"], CONTRACTS, files,
        temperatures={m: 1.5 for m in CONTRACTS}, reliability={}, feature_dim=SMALL.feature_dim,
        rule="entropy", count_temperatures=[1.0, 0.9, 0.8, 0.7], training={"epochs": 1},
        data={"source": "test"}, metrics={},
    )  # fmt: skip
    assert set(manifest.files) == {f"{m}.onnx" for m in CONTRACTS} | {"head.onnx", "report.md"}
    assert manifest.fusion.temperatures == [1.0, 0.9, 0.8, 0.7]
    assert verify_bundle(bundle) == manifest
    on_disk = json.loads((bundle / "manifest.json").read_text())
    assert on_disk["modalities"]["audio"]["input"]["kind"] == "audio"
    assert on_disk["modalities"]["pen"]["temperature"] == 1.5

    (bundle / "notes.md").write_text("# added after export\n")
    rewritten = rewrite_manifest(bundle, version=3)
    assert rewritten.version == 3 and "notes.md" in rewritten.files and verify_bundle(bundle) == rewritten

    (bundle / "report.md").write_text("# changed\n")
    with pytest.raises(BundleError, match=r"report\.md has sha256"):
        verify_bundle(bundle)
    (bundle / "report.md").unlink()
    with pytest.raises(BundleError, match=r"report\.md is listed in the manifest but missing"):
        verify_bundle(bundle)
    (bundle / "manifest.json").write_text("{}")
    with pytest.raises(BundleError, match="invalid manifest"):
        verify_bundle(bundle)
