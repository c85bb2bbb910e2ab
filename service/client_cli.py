"""The client's commands, `anymodal predict`, `models` and `inspect`, registered on the `anymodal` app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from anymodal.service.client import (
    DEFAULT_URL,
    ClientError,
    Server,
    build_instances,
    inspect_bundle,
    parse_options,
    predict_in_process,
    repository_models,
)
from anymodal.service.client_format import bundle_text, models_text, prediction_text

Url = Annotated[str, typer.Option(envvar="ANYMODAL_URL", help="The server's base URL")]
ApiKey = Annotated[
    str | None, typer.Option(envvar="ANYMODAL_API_KEY", help="API key, when the server needs one")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the answer as JSON")]


def _fail(error: ClientError) -> typer.Exit:
    typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def _show(answer: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(answer, indent=2) if as_json else text)


def predict(
    image: Annotated[list[Path] | None, typer.Option(help="An image file; once per instance")] = None,
    audio: Annotated[
        list[Path] | None, typer.Option(help="A recording (WAV, FLAC, OGG); once per instance")
    ] = None,
    text: Annotated[list[str] | None, typer.Option(help="Text; once per instance")] = None,
    tensor: Annotated[list[str] | None, typer.Option(help="Numbers as 1,2,3; once per instance")] = None,
    model: Annotated[str | None, typer.Option(help="Model name [the server's default]")] = None,
    version: Annotated[int | None, typer.Option(help="Model version [the newest]")] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            help="A request option as key=value: fusion, top_k, on_invalid, audio_too_long, reliability"
        ),
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Run this bundle in-process instead of asking a server")
    ] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Predict from any subset of modalities. Give each input option once per instance: the i-th
    --image, --audio, --text and --tensor form instance i."""
    try:
        instances = build_instances(image or [], audio or [], text or [], tensor or [])
        options = parse_options(option or [])
        if model_dir is not None:
            answer = predict_in_process(model_dir, instances, options)
        else:
            answer = Server(url, api_key).predict(instances, options, model, version)
    except ClientError as error:
        raise _fail(error) from None
    _show(answer, as_json, prediction_text(answer))


def models(
    repository: Annotated[
        Path | None, typer.Option(help="List this local model repository instead of a server's models")
    ] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """List the models of a server, or of a local repository: versions, modalities, labels."""
    try:
        listing = repository_models(repository) if repository else Server(url, api_key).models()
    except ClientError as error:
        raise _fail(error) from None
    _show(listing, as_json, models_text(listing))


def inspect(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder, as models/digits/1")],
    as_json: AsJson = False,
) -> None:
    """Show a bundle's labels, input contracts, calibration, fusion, provenance and test metrics,
    and check every file against its sha256 (exit 2, naming the file, when one does not match)."""
    try:
        info = inspect_bundle(bundle)
    except ClientError as error:
        raise _fail(error) from None
    _show(info, as_json, bundle_text(info))
    if not info["files"]["verified"]:
        raise _fail(ClientError(info["files"]["problem"]))


def register(app: typer.Typer) -> None:
    app.command()(predict)
    app.command()(models)
    app.command()(inspect)
