"""openapi.yaml is what the app serves, and a property-based fuzz of the live server from it
(schemathesis) finds no 5xx and no response that breaks the published schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from anymodal.service.app import create_app
from anymodal.service.settings import Settings

from tests.live import ROOT, LiveServer, metric

OPENAPI = ROOT / "openapi.yaml"


def test_openapi_yaml_equals_what_the_app_serves() -> None:
    served = create_app(Settings()).openapi()
    published = yaml.safe_load(OPENAPI.read_text())
    assert published == served, "openapi.yaml is stale: run `anymodal openapi --out openapi.yaml`"


def test_every_route_has_an_example_or_a_schema_with_examples() -> None:
    spec = yaml.safe_load(OPENAPI.read_text())
    bodies = [
        op["requestBody"]["content"]
        for path in spec["paths"].values()
        for op in path.values()
        if "requestBody" in op
    ]
    assert bodies
    schemas = spec["components"]["schemas"]
    for content in bodies:
        for media in content.values():
            reference = media.get("schema", {}).get("$ref", "")
            has_example = "example" in media or "examples" in schemas.get(reference.split("/")[-1], {})
            assert has_example, media


def test_fuzz_finds_no_server_error(repository: Path, tmp_path: Path) -> None:
    """Every phase of schemathesis (examples, coverage, fuzzing, stateful) against a live server,
    with every check but `positive_data_acceptance`: a schema cannot say which bytes are an image,
    so a schema-valid request can rightly be refused with a 4xx."""
    with LiveServer(repository) as server:
        result = subprocess.run(
            [str(Path(sys.executable).with_name("st")), "run", str(OPENAPI), "--url", server.url,
             "--checks", "all", "--exclude-checks", "positive_data_acceptance",
             "--max-examples", "25", "--seed", "2026", "--generation-database", "none",
             "--report-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        page = server.client.get("/metrics").text
        answered = metric(page, "anymodal_requests_total")
        failed = sum(metric(page, "anymodal_requests_total", code=str(code)) for code in range(500, 600))
        assert answered > 500 and failed == 0


def test_every_route_answers_with_an_example() -> None:
    spec = yaml.safe_load(OPENAPI.read_text())
    schemas = spec["components"]["schemas"]

    def has_examples(schema: dict) -> bool:
        if "$ref" in schema:
            return has_examples(schemas[schema["$ref"].split("/")[-1]])
        if "anyOf" in schema:
            return all(has_examples(option) for option in schema["anyOf"])
        return "examples" in schema

    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                for media in response.get("content", {}).values():
                    if code.startswith("2") or media["schema"].get("$ref"):
                        assert has_examples(media["schema"]), (method, path, code)
