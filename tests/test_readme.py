"""The README's first lines are the two fresh-machine commands, and CI runs the test one."""

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
