"""What `anymodal train` prints: a final table of clean accuracy per subset and system, and logs as
JSON lines on request."""

import json
import logging
from pathlib import Path

from anymodal.evaluation.cli import summary_table
from anymodal.service.cli import app
from anymodal.training.cli import JsonFormatter, json_logging
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def test_the_summary_table_has_every_subset_and_system_of_the_bundled_model() -> None:
    metrics = json.loads((ROOT / "models" / "digits" / "1" / "metrics.json").read_text())
    lines = summary_table(metrics).splitlines()
    assert "MLA, gate on" in lines[1] and "joint training, gate on" in lines[1]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == set(metrics["matrix"]["mla"])
    full = metrics["matrix"]["mla"]["image+audio+text"]["clean"]
    assert rows["image+audio+text"].split()[1] == f"{100 * full['mean']:.1f}"


def test_json_logs_are_one_object_per_line() -> None:
    record = logging.LogRecord("training.train", logging.INFO, __file__, 1, "mla: %d epochs", (12,), None)
    entry = json.loads(JsonFormatter().format(record))
    assert (
        entry["message"] == "mla: 12 epochs"
        and entry["level"] == "info"
        and entry["logger"] == "training.train"
    )


def test_the_log_format_option_switches_to_json_and_refuses_others() -> None:
    runner = CliRunner()
    try:
        assert runner.invoke(app, ["--log-format", "json", "openapi", "--help"]).exit_code == 0
        assert json_logging()
        refused = runner.invoke(app, ["--log-format", "yaml", "openapi", "--help"])
        assert refused.exit_code == 2 and "--log-format" in refused.output
    finally:
        runner.invoke(app, ["--log-format", "text", "openapi", "--help"])
    assert not json_logging()
