"""The `anymodal` command-line client: predictions and model listings from a running server over
the /v1 API, or from a bundle run in-process by the service's own repository and predictor code (so
an in-process answer is the server's answer), and a bundle's contents and checksums.

Every function returns plain JSON-ready dicts, shaped like the server's answers; `client_format.py`
renders them as tables. Problems a user can fix raise ClientError (the CLI prints it, exits 2).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from anymodal.service.lineage import growth, lineage
from anymodal.service.manifest import BundleError, read_manifest, verify_bundle
from anymodal.service.repository import version_folders

DEFAULT_URL = "http://127.0.0.1:8000"
KINDS = ("image", "audio", "text", "tensor")
OPTION_NAMES = ("fusion", "top_k", "on_invalid", "audio_too_long", "reliability")


class ClientError(Exception):
    """A problem the user can fix: its message says what and how."""


# -- inputs and options ----------------------------------------------------------------------------


def build_instances(
    images: Sequence[Path], audios: Sequence[Path], texts: Sequence[str], tensors: Sequence[str]
) -> list[dict[str, object]]:
    """The i-th value of each option given forms instance i, keyed by kind: file bytes, text, numbers."""
    given = {"image": list(images), "audio": list(audios), "text": list(texts), "tensor": list(tensors)}
    given = {kind: values for kind, values in given.items() if values}
    if not given:
        raise ClientError("no input: give at least one of --image, --audio, --text, --tensor")
    counts = {len(values) for values in given.values()}
    if len(counts) > 1:
        told = ", ".join(f"--{kind} {len(values)} time(s)" for kind, values in given.items())
        raise ClientError(f"{told}: give each option once per instance, the same number of times")
    instances: list[dict[str, object]] = [{} for _ in range(counts.pop())]
    for kind, values in given.items():
        for instance, value in zip(instances, values, strict=True):
            instance[kind] = _read(kind, value)
    return instances


def _read(kind: str, value: Path | str) -> object:
    if kind in ("image", "audio"):
        try:
            return Path(value).read_bytes()
        except OSError as error:
            raise ClientError(f"--{kind} {value}: cannot read it ({error.strerror})") from None
    if kind == "tensor":
        try:
            return [float(v) for v in str(value).strip().strip("[]").split(",")]
        except ValueError:
            raise ClientError(f"--tensor {value}: must be numbers separated by commas, as 1,2.5,3") from None
    return value


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs -> /v1 request options, checked as the server checks them."""
    from anymodal.service.payloads import validation_error
    from anymodal.service.schemas import PredictOptions
    from pydantic import ValidationError

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in OPTION_NAMES:
            raise ClientError(f"--option {pair}: must be key=value with key one of {', '.join(OPTION_NAMES)}")
        options[key] = value.strip()
    try:
        return PredictOptions.model_validate(options).model_dump(include=set(options))
    except ValidationError as error:
        raise ClientError(validation_error(error).message) from None


def by_modality(
    instances: list[dict[str, object]], kinds: dict[str, str], model: str
) -> list[dict[str, object]]:
    """Instances keyed by kind -> keyed by the model's modality names (`--tensor` is the `pen` of `pen`)."""
    names: dict[str, str] = {}
    for kind in {k for instance in instances for k in instance}:
        matching = [m for m, k in kinds.items() if k == kind]
        if len(matching) != 1:
            have = ", ".join(f"{m} ({k})" for m, k in kinds.items())
            why = "no" if not matching else "more than one"
            raise ClientError(f"--{kind}: model {model!r} has {why} {kind} modality; its modalities: {have}")
        names[kind] = matching[0]
    return [{names[kind]: value for kind, value in instance.items()} for instance in instances]


# -- a server --------------------------------------------------------------------------------------


class Server:
    """A running anymodal server's /v1 API."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.TransportError as error:
            raise ClientError(
                f"cannot reach an anymodal server at {self.url} ({error}): start one with `anymodal serve`,"
                " point --url (or ANYMODAL_URL) at yours, or predict in-process with --model-dir BUNDLE"
            ) from None
        try:
            answer = response.json()
        except ValueError:
            answer = {"error": response.text.strip() or response.reason_phrase}
        if response.is_error:
            raise ClientError(server_message(response.status_code, answer))
        return answer

    def kinds(self, name: str | None, version: int | None) -> tuple[str, dict[str, str]]:
        """The model's name (the server's default when None) and its modalities' kinds."""
        if name is None:
            name = self.call("GET", "/v1/models").get("default_model")
            if name is None:
                raise ClientError(f"the server at {self.url} serves no model")
        info = self.call("GET", _model_path(name, version))
        return name, {m: spec["kind"] for m, spec in info["modalities"].items()}

    def predict(
        self,
        instances: list[dict[str, object]],
        options: dict[str, Any],
        model: str | None,
        version: int | None,
    ) -> dict[str, Any]:
        name, kinds = self.kinds(model, version)
        named = [
            {m: {"b64": _b64(v)} if isinstance(v, bytes) else v for m, v in instance.items()}
            for instance in by_modality(instances, kinds, name)
        ]
        body: dict[str, Any] = {"inputs": named[0]} if len(named) == 1 else {"instances": named}
        return self.call("POST", _model_path(name, version) + "/predict", body | {"options": options})

    def models(self) -> dict[str, Any]:
        listing = self.call("GET", "/v1/models")
        rows = []
        for summary in listing["models"]:
            info = self.call("GET", _model_path(summary["name"], None))
            rows.append(
                {
                    "name": summary["name"],
                    "versions": summary["versions"],
                    "modalities": {m: spec["kind"] for m, spec in info["modalities"].items()},
                    "labels": len(info["labels"]),
                }
            )
        return {"models": rows, "default_model": listing.get("default_model")}


def server_message(status: int, answer: dict[str, Any]) -> str:
    """The server's error answer as a user reads it: what, where, and every problem found."""
    lines = [f"the server answered {status}: {answer.get('error', answer)}"]
    if answer.get("field"):
        lines.append(f"field: {answer['field']}")
    lines += [f"  {e['field']}: {e['message']}" for e in answer.get("errors") or []]
    return "\n".join(lines)


def _model_path(name: str, version: int | None) -> str:
    return f"/v1/models/{name}" + (f"/versions/{version}" if version is not None else "")


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


# -- in-process ------------------------------------------------------------------------------------


def predict_in_process(
    bundle: Path, instances: list[dict[str, object]], options: dict[str, Any]
) -> dict[str, Any]:
    """Load `bundle` as the server loads it (verified, warmed up) and answer as the server answers."""
    from anymodal.service.api_v1 import _body
    from anymodal.service.predictor import InvalidInputs, Options, Predictor
    from anymodal.service.repository import ModelRepository
    from anymodal.service.schemas import PredictionBody
    from anymodal.service.settings import Settings

    manifest = _manifest(bundle)
    with tempfile.TemporaryDirectory() as root, ThreadPoolExecutor() as executor:
        # The repository wants <root>/<name>/<version>/: lay the bundle out so, wherever it is.
        (Path(root) / manifest.name).mkdir()
        (Path(root) / manifest.name / str(manifest.version)).symlink_to(bundle.resolve(), True)
        settings = Settings(model_repository=Path(root))
        repository = ModelRepository(settings)
        repository.load_all()
        if manifest.name not in repository.models:
            failure = repository.failures.get((manifest.name, manifest.version))
            raise ClientError(f"cannot load {bundle}: {failure.reason if failure else 'see the log'}")
        loaded = repository.get(manifest.name, manifest.version)
        kinds = {m: spec.kind for m, spec in manifest.modalities.items()}
        named = by_modality(instances, kinds, manifest.name)
        fields = ["inputs"] if len(named) == 1 else [f"instances[{i}]" for i in range(len(named))]
        chosen = Options(**options)
        predictor = Predictor(executor, settings)
        try:
            predictions = asyncio.run(predictor.predict(loaded, named, fields, chosen))  # type: ignore[arg-type]
        except InvalidInputs as error:
            raise ClientError(str(error)) from None
    bodies = [
        PredictionBody.model_validate(_body(p, loaded)).model_dump(mode="json", exclude_none=True)
        for p in predictions
    ]
    common: dict[str, Any] = {
        "model": loaded.ref,
        "fusion": chosen.fusion or manifest.fusion.rule,
    }
    return common | bodies[0] if len(bodies) == 1 else common | {"predictions": bodies}


# -- local repositories and bundles ----------------------------------------------------------------


def _manifest(bundle: Path) -> Any:
    try:
        return read_manifest(bundle)
    except BundleError as error:
        raise ClientError(str(error)) from None


def repository_models(root: Path) -> dict[str, Any]:
    """The models of a local repository, as `Server.models` lists a server's (unverified: fast)."""
    if not root.is_dir():
        raise ClientError(f"{root}: no such model repository")
    rows = []
    for folder in sorted(p for p in root.iterdir() if version_folders(p)):
        versions = version_folders(folder)
        manifest = _manifest(versions[max(versions)])
        rows.append(
            {
                "name": folder.name,
                "versions": sorted(versions),
                "modalities": {m: spec.kind for m, spec in manifest.modalities.items()},
                "labels": len(manifest.labels),
            }
        )
    return {"models": rows, "default_model": rows[0]["name"] if rows else None}


def inspect_bundle(bundle: Path) -> dict[str, Any]:
    """A bundle's contract, provenance and metrics, and whether every file matches its sha256."""
    manifest = _manifest(bundle)
    try:
        verify_bundle(bundle)
        problem = None
    except BundleError as error:
        problem = str(error)
    training = manifest.training
    grows = growth(manifest)
    return {
        "bundle": str(bundle),
        "name": manifest.name,
        "version": manifest.version,
        "labels": manifest.labels,
        "modalities": {
            m: {
                "input": spec.input.model_dump(),
                "temperature": spec.temperature,
                "reliability_alpha": spec.reliability.alpha if spec.reliability else None,
            }
            for m, spec in manifest.modalities.items()
        },
        "fusion": manifest.fusion.model_dump(),
        "training": {
            "seed": training.get("seed"),
            "chosen_seed": training.get("chosen_seed"),
            "seeds": training.get("seeds"),
            "system": training.get("system"),
            "trained_at": training.get("trained_at"),
            "command": manifest.data.get("command"),
        },
        "metrics": manifest.metrics,
        "lineage": [step.model_dump(mode="json") for step in lineage(manifest)],
        "growth": None if grows is None else grows.model_dump(),
        "files": {"count": len(manifest.files), "verified": problem is None, "problem": problem},
    }
