"""The command-line client (`anymodal predict`, `models`, `inspect`) against a real server, in-process,
and on local bundles; and the README's client example, whose table output is checked here."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from anymodal.service.cli import app
from typer.testing import CliRunner

from tests.live import FIXTURES, MODELS, ROOT, LiveServer, free_port

SEVEN = [
    "--image",
    str(FIXTURES / "digit_7.png"),
    "--audio",
    str(FIXTURES / "digit_7.wav"),
    "--text",
    "sieben",
]
PEN = ",".join(["50"] * 16)


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[LiveServer]:
    with LiveServer(repository) as live:
        yield live


def anymodal(*args: str, code: int = 0) -> tuple[str, str]:
    """Run `anymodal ARGS`; its stdout and stderr, after checking its exit status."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result.stdout, result.stderr


def test_predict_prints_a_table_and_json_equal_to_in_process(server: LiveServer) -> None:
    table, _ = anymodal("predict", *SEVEN, "--url", server.url)
    lines = table.splitlines()
    assert lines[0] == "model digits version 1, entropy fusion"
    assert re.fullmatch(r"7  score 0\.99\d\d", lines[1])
    assert lines[2].split() == ["modality", "state", "weight", "label", "confidence", "p-value"]
    assert [line.split()[:2] for line in lines[3:]] == [[m, "present"] for m in ("image", "audio", "text")]

    remote = json.loads(anymodal("predict", *SEVEN, "--url", server.url, "--json")[0])
    assert remote["label"] == "7" and remote["model"] == {"name": "digits", "version": 1}
    local = json.loads(anymodal("predict", *SEVEN, "--model-dir", str(MODELS / "digits" / "1"), "--json")[0])
    assert local["label"] == remote["label"] and local["score"] == pytest.approx(remote["score"], abs=1e-4)
    for m, report in remote["modalities"].items():
        assert local["modalities"][m]["state"] == report["state"]
        assert local["modalities"][m]["weight"] == pytest.approx(report["weight"], abs=1e-4)
    assert set(local) == set(remote) - {"request_id"}


def test_a_batch_and_options(server: LiveServer) -> None:
    answer = json.loads(
        anymodal(
            "predict",
            "--text",
            "sieben",
            "--text",
            "three",
            "--option",
            "top_k=1",
            "--url",
            server.url,
            "--json",
        )[0]
    )
    assert [p["label"] for p in answer["predictions"]] == ["7", "3"]
    assert all(len(p["top_k"]) == 1 for p in answer["predictions"])
    table, _ = anymodal("predict", "--text", "sieben", "--text", "three", "--url", server.url)
    assert "instance 0: 7  score" in table and "instance 1: 3  score" in table


def test_counts_and_options_that_differ_are_refused_before_sending() -> None:
    _, err = anymodal(
        "predict", "--text", "a", "--text", "b", "--image", str(FIXTURES / "digit_7.png"), code=2
    )
    assert "--image 1 time(s), --text 2 time(s)" in err
    _, err = anymodal("predict", "--text", "a", "--option", "colour=red", code=2)
    assert "key one of fusion" in err
    _, err = anymodal("predict", "--text", "a", "--option", "fusion=median", code=2)
    assert "fusion" in err and "entropy" in err


def test_tensor_on_the_pen_model(server: LiveServer) -> None:
    answer = json.loads(
        anymodal(
            "predict", "--tensor", PEN, "--text", "two", "--model", "pen", "--url", server.url, "--json"
        )[0]
    )
    assert answer["model"]["name"] == "pen" and answer["label"] in ("zero", "one", "two")
    assert answer["modalities"]["pen"]["state"] in ("present", "unreliable")
    _, err = anymodal("predict", "--tensor", PEN, "--url", server.url, code=2)  # digits has no tensor
    assert "has no tensor modality" in err


def test_server_errors_print_the_message_and_field(server: LiveServer, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    _, err = anymodal("predict", "--image", str(broken), "--url", server.url, code=2)
    assert "the server answered 422" in err and "field: inputs.image" in err
    _, err = anymodal("predict", "--text", "a", "--model", "nope", "--url", server.url, code=2)
    assert "the server answered 404" in err and "not served here" in err


def test_no_server_says_where_and_how_to_start_one() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    _, err = anymodal("predict", "--text", "sieben", "--url", url, code=2)
    assert url in err and "anymodal serve" in err


def test_models_of_a_server_and_of_a_repository(server: LiveServer, repository: Path) -> None:
    table, _ = anymodal("models", "--url", server.url)
    assert re.search(
        r"^digits \(default\)\s+1\s+10\s+image \(image\), audio \(audio\), text \(text\)$", table, re.M
    )
    assert re.search(r"^pen\s+1\s+3\s+pen \(tensor\), text \(text\)$", table, re.M)
    remote = json.loads(anymodal("models", "--url", server.url, "--json")[0])
    local = json.loads(anymodal("models", "--repository", str(repository), "--json")[0])
    assert remote == local
    assert local["models"][1] == {
        "name": "pen",
        "versions": [1],
        "modalities": {"pen": "tensor", "text": "text"},
        "labels": 3,
    }


def test_inspect_a_bundle_and_a_changed_one(tmp_path: Path) -> None:
    text, _ = anymodal("inspect", str(MODELS / "digits" / "1"))
    assert "labels (10): 0 1 2 3 4 5 6 7 8 9" in text
    assert re.search(r"audio\s+audio\s+8000 Hz, at most 1.5 s \(longer: crop\)", text)
    assert "fusion: entropy" in text and "chosen_seed 0" in text and "anymodal train-digits" in text
    assert "test_accuracy 0.96" in text and text.rstrip().endswith("every sha256 verifies")
    info = json.loads(anymodal("inspect", str(MODELS / "digits" / "1"), "--json")[0])
    assert info["files"]["verified"] and info["modalities"]["text"]["input"]["max_length"] == 32

    copy = shutil.copytree(MODELS / "digits" / "1", tmp_path / "1")
    (copy / "text.reliability.npz").write_bytes(b"changed")
    text, err = anymodal("inspect", str(copy), code=2)
    assert "FAILED" in text and "text.reliability.npz has sha256" in err


def test_the_readme_client_example_prints_what_the_readme_shows(server: LiveServer) -> None:
    section = (ROOT / "README.md").read_text().split("### Command-line client")[1].split("\n### ")[0]
    command = re.search(r"```bash\n(anymodal predict .*)\n```", section)
    shown = re.search(r"```text\n(.*?)\n```", section, re.S)
    assert command and shown
    out, _ = anymodal(*command.group(1).split()[1:], "--url", server.url)
    got, want = out.strip().splitlines(), shown.group(1).splitlines()
    assert len(got) == len(want)
    for got_line, want_line in zip(got, want, strict=True):  # numbers within rounding, words exact
        pairs = list(zip(got_line.split(), want_line.split(), strict=True))
        for a, b in pairs:
            if re.fullmatch(r"\d+\.\d+", b):
                assert float(a) == pytest.approx(float(b), abs=2e-3), (got_line, want_line)
            else:
                assert a == b, (got_line, want_line)


def test_an_api_key_from_the_option_or_the_environment() -> None:
    with LiveServer(api_keys="secret") as live:
        _, err = anymodal("predict", "--text", "sieben", "--url", live.url, code=2)
        assert "the server answered 401" in err and "field: authorization" in err
        assert (
            "7  score" in anymodal("predict", "--text", "sieben", "--url", live.url, "--api-key", "secret")[0]
        )
        result = CliRunner().invoke(
            app, ["models"], env={"ANYMODAL_URL": live.url, "ANYMODAL_API_KEY": "secret"}
        )
        assert result.exit_code == 0 and "digits (default)" in result.stdout, result.stderr
