"""Deployment files: the Dockerfiles lint clean and copy only what exists, the image's install and
command work, compose and Kubernetes files match their schemas, the alert rules pass promtool and
their unit tests, and every dashboard query returns data from a real Prometheus scraping a real
server, the missing-modality panel reading the rates that were sent and the unreliable-input panel
the tones the reliability gate flagged."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient
import yaml

from tests.live import ROOT, LiveServer, copy_repository, fixture, free_port

DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]
KUBERNETES = DOCKER / "kubernetes"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "anymodal.json"
BIN = Path(sys.executable).parent


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    joined, current = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.strip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            if current.strip():
                joined.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(dockerfile):
        if instruction[0] == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, arguments in stage:
        if name == "ENV":
            values |= dict(item.split("=", 1) for item in shlex.split(arguments))
    return values


# -- Dockerfiles --------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    result = subprocess.run([BIN / "hadolint", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_file_a_dockerfile_copies_exists_in_the_build_context(dockerfile: Path) -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = []
    for name, arguments in instructions(dockerfile):
        if name == "COPY" and "--from=" not in arguments:
            copied += shlex.split(arguments)[:-1]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_non_root_with_exec_form_entrypoint_and_readiness_healthcheck(
    dockerfile: Path,
) -> None:
    final = stages(dockerfile)[-1]
    names = [name for name, _ in final]
    assert len(stages(dockerfile)) == 2  # multi-stage: nothing of the build stage but the venv
    assert dict(final)["USER"] not in ("root", "0")
    assert dict(final)["ENTRYPOINT"].startswith("[")
    assert "/v2/health/ready" in dict(final)["HEALTHCHECK"]
    assert "pip" not in " ".join(a for n, a in final if n == "RUN")  # nothing installed in the final stage
    env = env_of(final)
    assert {"ANYMODAL_MODEL_REPOSITORY", "ANYMODAL_PORT", "ANYMODAL_GRPC_PORT", "ANYMODAL_WORKERS"} <= set(
        env
    )
    assert dict(final)["EXPOSE"].split() == [env["ANYMODAL_PORT"], env["ANYMODAL_GRPC_PORT"]]
    assert names.index("USER") > names.index("COPY")


def test_installing_as_the_dockerfile_does_gives_a_server_that_answers_ready(tmp_path: Path) -> None:
    """The CPU image's build and start, outside Docker: the same files, the same install command
    (with its virtual environment and model folder moved under a temporary directory), the same
    environment, the entry point, then the HEALTHCHECK command itself until it succeeds."""
    build, final = stages(DOCKER / "Dockerfile")
    venv, models, source = tmp_path / "opt-anymodal", tmp_path / "models", tmp_path / "src"
    source.mkdir()
    for name, arguments in build:
        if name == "COPY":
            *sources, target = shlex.split(arguments)
            for item in sources:
                destination = source if target.endswith("./") else source / Path(target).name
                if (ROOT / item).is_dir():
                    shutil.copytree(ROOT / item, destination, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ROOT / item, destination)
    install = next(arguments for name, arguments in build if name == "RUN")
    install = install.replace("/opt/anymodal", str(venv)).replace(
        "python -m venv", f"{sys.executable} -m venv"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANYMODAL_", "PIP_", "VIRTUAL_ENV"))}
    env |= {k: v for k, v in env_of(build).items() if k != "PIP_NO_CACHE_DIR"}  # the local cache speeds it up
    result = subprocess.run(
        ["sh", "-c", install], cwd=source, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    installed = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "list"], capture_output=True, text=True
    ).stdout
    assert "onnxruntime" in installed and "torch" not in installed.split()

    for name, arguments in final:
        if name == "COPY" and "--from=" not in arguments:
            item, _ = shlex.split(arguments)
            shutil.copytree(ROOT / item, models)
    port, grpc_port = free_port(), free_port()
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("ANYMODAL_")}
    run_env |= {
        k: v.replace("$PATH", os.environ["PATH"]).replace("/opt/anymodal", str(venv))
        for k, v in env_of(final).items()
    }
    run_env |= {
        "ANYMODAL_MODEL_REPOSITORY": str(models),
        "ANYMODAL_PORT": str(port),
        "ANYMODAL_GRPC_PORT": str(grpc_port),
        "ANYMODAL_HOST": "127.0.0.1",
    }
    entrypoint = json.loads(dict(final)["ENTRYPOINT"])
    healthcheck = json.loads(dict(final)["HEALTHCHECK"].split("CMD", 1)[1])
    server = subprocess.Popen(
        entrypoint, env=run_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if subprocess.run(healthcheck, env=run_env, capture_output=True).returncode == 0:
                break
            assert server.poll() is None, server.stdout.read().decode()  # type: ignore[union-attr]
            time.sleep(0.2)
        else:
            pytest.fail("the image's command never answered its own healthcheck")
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/predict", files={"text": (None, "sieben")})
        assert answer.status_code == 200 and answer.json()["label"] == "7"
        triton = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")  # the serve extra has gRPC
        assert triton.is_server_ready() and triton.get_server_metadata().name == "anymodal"
        triton.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- compose, Grafana provisioning, Kubernetes ------------------------------------------------


def test_compose_file_matches_the_compose_spec_and_mounts_files_that_exist() -> None:
    compose = DOCKER / "compose.yaml"
    result = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(compose)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    spec = yaml.safe_load(compose.read_text())
    for service in spec["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), source
    assert (
        DOCKER
        / spec["services"]["anymodal"]["build"]["context"]
        / spec["services"]["anymodal"]["build"]["dockerfile"]
    ).is_file()
    published = {p.split(":")[0] for s in spec["services"].values() for p in s.get("ports", [])}
    assert published == {"8000", "8001", "9090", "3000"}
    readme = (ROOT / "README.md").read_text()
    assert all(f"localhost:{port}" in readme for port in published)


def test_grafana_is_provisioned_with_the_prometheus_datasource_and_the_dashboard() -> None:
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "prometheus"
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/anymodal.yml").read_text())
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    mounts = dict(
        v.split(":")[:2][::-1] for v in compose["services"]["grafana"]["volumes"] if v.startswith(".")
    )
    assert mounts[provider["providers"][0]["options"]["path"]] == "./grafana/dashboards"
    assert (DOCKER / "prometheus" / "alerts.yml").is_file()


def test_kubernetes_core_objects_match_their_schemas() -> None:
    files = [KUBERNETES / f for f in ("deployment.yaml", "service.yaml", "hpa.yaml")]
    result = subprocess.run(
        [BIN / "kubernetes-validate", "--strict", *map(str, files)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert all((KUBERNETES / r).is_file() for r in kustomization["resources"])


def test_kubernetes_objects_fit_together() -> None:
    """The custom resources (PodMonitor, InferenceService) have no schema offline; check what
    matters: they select and reach the pods the Deployment makes, on the routes the server has."""
    deployment = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())
    service = yaml.safe_load((KUBERNETES / "service.yaml").read_text())
    monitor = yaml.safe_load((KUBERNETES / "podmonitor.yaml").read_text())
    inference = yaml.safe_load((KUBERNETES / "inferenceservice.yaml").read_text())
    inference_grpc = yaml.safe_load((KUBERNETES / "inferenceservice-grpc.yaml").read_text())
    image = env_of(stages(DOCKER / "Dockerfile")[-1])
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    labels = pod["metadata"]["labels"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert (
        service["spec"]["selector"].items() <= labels.items()
        and service["spec"]["ports"][0]["targetPort"] in ports
    )
    assert ports["http"] == int(image["ANYMODAL_PORT"]) and ports["grpc"] == int(image["ANYMODAL_GRPC_PORT"])
    grpc_service = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_service["targetPort"] == "grpc" and grpc_service["appProtocol"] == "grpc"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    drain = int(next(e["value"] for e in container["env"] if e["name"] == "ANYMODAL_DRAIN_SECONDS"))
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["spec"]["terminationGracePeriodSeconds"] > pause + drain
    assert (
        pod["spec"]["securityContext"]["runAsNonRoot"]
        and container["securityContext"]["readOnlyRootFilesystem"]
    )
    assert container["resources"]["requests"] and container["resources"]["limits"]

    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert all(e["port"] in ports and e["path"] == "/metrics" for e in monitor["spec"]["podMetricsEndpoints"])

    assert (inference["apiVersion"], inference["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = inference["spec"]["predictor"]["containers"][0]
    port = predictor["ports"][0]["containerPort"]
    assert predictor["name"] == "kserve-container" and predictor["image"] == container["image"]
    assert {"name": "ANYMODAL_PORT", "value": str(port)} in predictor["env"]
    assert predictor["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    assert {"name": "PROTOCOL", "value": "v2"} in predictor["env"]

    # the gRPC variant: KServe exposes one port, named h2c for gRPC, where the gRPC server listens
    assert (inference_grpc["apiVersion"], inference_grpc["kind"]) == (
        inference["apiVersion"],
        inference["kind"],
    )
    predictor = inference_grpc["spec"]["predictor"]["containers"][0]
    (exposed,) = predictor["ports"]
    assert exposed["name"] == "h2c" and predictor["image"] == container["image"]
    assert {"name": "ANYMODAL_GRPC_PORT", "value": str(exposed["containerPort"])} in predictor["env"]
    assert {"name": "PROTOCOL", "value": "v2"} in predictor["env"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert predictor[probe] == {"tcpSocket": {"port": exposed["containerPort"]}}


# -- Prometheus: rules, their unit tests, and the dashboard against real data ------------------


@pytest.mark.prometheus
def test_promtool_checks_the_config_and_rules_and_runs_the_rule_tests() -> None:
    for command in (
        ["promtool", "check", "config", str(DOCKER / "prometheus" / "prometheus.yml")],
        ["promtool", "check", "rules", str(DOCKER / "prometheus" / "alerts.yml")],
        ["promtool", "test", "rules", str(DOCKER / "prometheus" / "alerts_test.yml")],
    ):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_summary_a_description_and_a_unit_test() -> None:
    rules = yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((DOCKER / "prometheus" / "alerts_test.yml").read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case.get("exp_alerts")}
    for rule in rules:
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 100
        assert rule["alert"] in tested
    names = {rule["alert"] for rule in rules}
    kinds = ("Missing", "Unreliable", "MixShift", "ServerErrors", "Slow", "NoModelReady", "Repository")
    for kind in (*kinds, "ScrapeDown"):
        assert any(kind in name for name in names), kind


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_the_dashboard_has_the_panels_operators_need_and_variables_for_model_and_instance() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {
        "Missing-modality rate", "Modality combinations", "Unreliable inputs by modality",
        "Request rate by route", "Errors by status", "Prediction latency", "Fusion weight by modality",
        "Entropy by modality", "Reliability score by modality", "Batch size", "Queue wait",
        "Requests in flight", "Models ready",
    } <= titles  # fmt: skip
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"model", "instance"} <= variables
    for _, expr in dashboard_queries():
        if "anymodal_" in expr and "load_failures" not in expr:
            assert 'instance=~"$instance"' in expr, expr


def test_the_dashboard_panels_fit_the_grid_without_overlapping_each_in_its_row() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
    rows = sorted((panel["gridPos"]["y"], panel["title"]) for panel in panels if panel["type"] == "row")
    by_title = {panel["title"]: panel for panel in panels}

    def row_of(title: str) -> str:
        return [row for y, row in rows if y <= by_title[title]["gridPos"]["y"]][-1]

    assert row_of("Unreliable inputs by modality") == row_of("Missing-modality rate") == "Missing modalities"
    unreliable, unusable = by_title["Unreliable inputs by modality"], by_title["Unusable inputs"]
    assert unreliable["gridPos"]["y"] == unusable["gridPos"]["y"]  # side by side
    assert row_of("Reliability score by modality") == row_of("Entropy by modality") == "Fusion"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory):
    """A real server and a real Prometheus scraping it every second; traffic with audio missing
    from 30% of the requests and the image from 10% is sent once both are up. In 20% of the
    requests (all with image and text) the audio is a 1 s 440 Hz tone, not speech: it decodes, and
    the reliability gate should flag it as unreliable."""
    from tests.helpers import tone, wav_bytes

    folder = tmp_path_factory.mktemp("prometheus")
    server = LiveServer(copy_repository(folder / "models"))
    server.wait_ready()
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DOCKER / "prometheus" / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "anymodal", "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        ["prometheus", f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10)
    try:
        # Until its storage is ready Prometheus answers the API with a plain-text 503: wait for
        # its readiness endpoint before the first query.
        ready = f"http://127.0.0.1:{port}/-/ready"
        wait_for(lambda: httpx.get(ready, timeout=2).status_code == 200, "Prometheus to be ready")
        wait_for(lambda: query(api, 'up{job="anymodal"} == 1'), "Prometheus scraping the server")
        time.sleep(2.5)  # a few scrapes of the counters at zero, before any traffic
        image, audio = (base64(fixture("digit_7.png")), base64(fixture("digit_7.wav")))
        beep = base64(wav_bytes(tone(1.0, 8000, hz=440.0), 8000))
        bodies = []
        for i in range(100):
            inputs: dict = {"text": "sieben"}
            if i % 10 >= 3:
                inputs["audio"] = {"b64": beep if i % 10 >= 8 else audio}
            if i % 10 != 3:
                inputs["image"] = {"b64": image}
            bodies.append({"inputs": inputs})
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda body: server.client.post("/v1/predict", json=body), bodies))
        assert all(a.status_code == 200 for a in answers)
        for _ in range(3):
            assert server.client.get("/v1/no-such-route").status_code == 404  # errors, without inputs
        time.sleep(3.5)  # scrapes that see all of it
        yield api
    finally:
        api.close()
        process.terminate()
        process.wait(timeout=30)
        server.stop()


def base64(data: bytes) -> str:
    import base64 as codec

    return codec.b64encode(data).decode()


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def query(api: httpx.Client, expr: str) -> list[dict]:
    answer = api.get("/query", params={"query": expr}).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def grafana(expr: str, model: str = ".*") -> str:
    """A panel query as Grafana would send it, for one model (or all) and every instance."""
    return expr.replace("$model", model).replace("$instance", ".*").replace("$__rate_interval", "1m")


@pytest.mark.prometheus
@pytest.mark.parametrize(("title", "expr"), dashboard_queries(), ids=[t for t, _ in dashboard_queries()])
def test_every_dashboard_query_returns_data(prometheus: httpx.Client, title: str, expr: str) -> None:
    result = query(prometheus, grafana(expr))
    assert result, f"panel {title!r} shows no data"
    assert all(re.fullmatch(r"-?[0-9.e+-]+|NaN", sample["value"][1]) for sample in result)


@pytest.mark.prometheus
def test_the_missing_modality_panel_reads_the_rates_that_were_sent(prometheus: httpx.Client) -> None:
    expr = next(e for title, e in dashboard_queries() if title == "Missing-modality rate")
    rates = {
        s["metric"]["modality"]: float(s["value"][1]) for s in query(prometheus, grafana(expr, "digits"))
    }
    assert rates == pytest.approx({"audio": 0.30, "image": 0.10, "text": 0.0}, abs=0.01)


@pytest.mark.prometheus
def test_the_unreliable_input_panel_reads_the_tones_the_gate_flagged(prometheus: httpx.Client) -> None:
    """20 of the 70 audio inputs sent were a tone: the reliability gate must flag some of them (all
    of them and none of the spoken digits would read 2/7)."""
    expr = next(e for title, e in dashboard_queries() if title == "Unreliable inputs by modality")
    shares = {
        s["metric"]["modality"]: float(s["value"][1]) for s in query(prometheus, grafana(expr, "digits"))
    }
    assert set(shares) == {"audio", "image", "text"}, "the unreliable-input panel shows no data"
    assert shares["audio"] > 0, "no tone was flagged unreliable"


@pytest.mark.prometheus
def test_dashboard_variables_resolve_and_alert_rules_evaluate(prometheus: httpx.Client) -> None:
    models = prometheus.get("/label/model/values", params={"match[]": "anymodal_model_info"}).json()["data"]
    assert models == ["digits"]
    instances = prometheus.get(
        "/label/instance/values", params={"match[]": 'anymodal_model_info{model=~"digits"}'}
    )
    assert len(instances.json()["data"]) == 1
    wait_for(
        lambda: (
            all(
                r["health"] == "ok"
                for g in prometheus.get("/rules").json()["data"]["groups"]
                for r in g["rules"]
            )
            and prometheus.get("/rules").json()["data"]["groups"]
        ),
        "the alert rules to evaluate",
    )
    rules = [r for g in prometheus.get("/rules").json()["data"]["groups"] for r in g["rules"]]
    written = yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    assert len(rules) == len(written) == 9 and all(r["health"] == "ok" for r in rules)
    assert {r["name"] for r in rules} == {r["alert"] for r in written}
