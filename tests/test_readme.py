"""The README's first lines are the two fresh-machine commands, and CI runs the test one; its serving
examples (curl, and the tritonclient ones over HTTP and gRPC) work as written."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```")]
    return [line for line in block if not line.startswith("#")]


def test_readme_opens_with_the_serve_and_test_commands() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    assert readme.index("```bash") < 5
    serve, test = _commands()
    assert serve.endswith("anymodal serve") and "'.[serve]'" in serve and "torch" not in serve
    assert test.startswith("python3 -m venv .venv") and test.endswith("pytest")
    assert "torch==2.13.0" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, test = _commands()
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def _serving_curls() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Serving") : text.index("## Project layout")]
    return [line for line in section.splitlines() if line.startswith("curl ")]


def test_the_readme_curl_examples_work_as_written(tmp_path: Path) -> None:
    from tests.live import LiveServer, copy_repository

    commands = _serving_curls()
    assert len(commands) >= 8
    with LiveServer(copy_repository(tmp_path / "models")) as server:
        for command in commands:
            assert "http://127.0.0.1:8000/" in command
            run = subprocess.run(
                ["bash", "-c", command.replace("http://127.0.0.1:8000/", f"{server.url}/").replace("curl -s", "curl -sS -f")],
                cwd=ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert run.returncode == 0, (command, run.stderr, run.stdout)
            if "/metrics" in command:
                assert "anymodal_inputs_total" in run.stdout
                continue
            answer = json.loads(run.stdout)
            assert "error" not in answer, run.stdout
            expected = _implied_label(command)
            if expected is not None:
                assert answer["label"] == expected, (command, answer["label"])
            if "instances" in command:  # drei, nine
                assert [p["label"] for p in answer["predictions"]] == ["3", "9"]
            if "/infer" in command:  # sieben, drei
                labels = next(o for o in answer["outputs"] if o["name"] == "label")
                assert labels["data"] == ["7", "3"]
            if command == commands[0]:
                _check_against_the_shown_answer(answer)


def _implied_label(command: str) -> str | None:
    """The digit a predict command's inputs show (a fixture's name, or a number word)."""
    if "/predict" not in command or "instances" in command:
        return None
    for digit, words in (("7", ("digit_7", "sieben")), ("3", ("digit_3", "three", "drei"))):
        if any(word in command for word in words):
            return digit
    return None


def _check_against_the_shown_answer(answer: dict) -> None:
    """The README's JSON answer is the first curl's: same label, and every modality's state and
    own label; the probabilities to the three decimals shown."""
    text = (ROOT / "README.md").read_text()
    start = text.index('```json\n{\n  "label"')
    shown = json.loads(text[start + len("```json\n") : text.index("```", start + 7)])
    assert answer["label"] == shown["label"] and answer["reliable"] == shown["reliable"]
    assert abs(answer["score"] - shown["score"]) < 1e-4
    for m, report in shown["modalities"].items():
        got = answer["modalities"][m]
        assert (got["state"], got["label"]) == (report["state"], report["label"]), m
        assert (
            abs(got["weight"] - report["weight"]) < 1e-3
            and abs(got["confidence"] - report["confidence"]) < 1e-3
        )


def _triton_example(start: str = "### Open Inference Protocol (KServe v2)") -> str:
    """The first ```python block of the README's Open Inference Protocol section after `start`."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(start) : text.index("### Errors")]
    return section[
        section.index("```python\n") + len("```python\n") : section.index("\n```", section.index("```python"))
    ]


def test_the_readme_tritonclient_example_works_as_written() -> None:
    from tests.live import LiveServer

    code = _triton_example()
    assert 'url="127.0.0.1:8000"' in code
    with LiveServer() as server:
        run = subprocess.run(
            [sys.executable, "-c", code.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    label, states = run.stdout.splitlines()
    assert label.startswith("7 0.99") and states == "[b'present' b'missing' b'present']"


def test_the_readme_grpc_example_works_as_written() -> None:
    from tests.live import LiveServer

    code = _triton_example("#### gRPC")
    assert "import tritonclient.grpc" in code and 'url="127.0.0.1:8001"' in code
    with LiveServer() as server:
        run = subprocess.run(
            [sys.executable, "-c", code.replace("127.0.0.1:8001", server.grpc_url)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    label, states = run.stdout.splitlines()
    assert label.startswith("7 0.99") and states == "[b'present' b'missing' b'present']"


def test_the_readme_results_table_is_the_bundled_models_report() -> None:
    """The digits table's rows are the bundled model's metrics.json, to the decimal shown."""
    metrics = json.loads((ROOT / "models" / "digits" / "1" / "metrics.json").read_text())
    text = (ROOT / "README.md").read_text()
    table = (
        text[text.index("| test accuracy (%) | MLA, gate on (served)") :].split("\n\n")[0].splitlines()[2:]
    )
    rows = {line.split(" | ")[0].strip("| "): line for line in table}
    matrix = metrics["matrix"]
    expected = {
        "image, audio and text": ("image+audio+text", "clean"),
        "image alone": ("image", "clean"),
        "audio alone": ("audio", "clean"),
        "text alone": ("text", "clean"),
        "all three, image corrupted": ("image+audio+text", "image:all"),
        "all three, audio corrupted": ("image+audio+text", "audio:all"),
        "all three, text corrupted": ("image+audio+text", "text:all"),
    }
    for row, (subset, condition) in expected.items():
        cells = rows[row].split(" | ")[1:]
        for cell, variant in zip(cells, ("mla", "mla_no_gate", "mla_no_hgm", "joint"), strict=True):
            shown = float(cell.strip("*| ").split()[0].strip("*"))
            assert shown == round(100 * matrix[variant][subset][condition]["mean"], 1), (row, variant)
