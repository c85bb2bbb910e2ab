"""The `anymodal` command: `serve` and `openapi`, plus the training package's commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from anymodal.evaluation.cli import register as register_evaluation
from anymodal.service.client_cli import register as register_client
from anymodal.training.cli import configure_logging
from anymodal.training.cli import register as register_training

app = typer.Typer(
    help="anymodal: robust multimodal prediction from any subset of modalities.",
    no_args_is_help=True,
    add_completion=False,
)
app.callback()(configure_logging)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [ANYMODAL_HOST, 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [ANYMODAL_PORT, 8000]")] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="gRPC port; 0 turns gRPC off [ANYMODAL_GRPC_PORT, 8001]")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [ANYMODAL_WORKERS, 1]")] = None,
    repository: Annotated[
        Path | None, typer.Option(help="Model repository [ANYMODAL_MODEL_REPOSITORY, ./models]")
    ] = None,
) -> None:
    """Serve every model of the repository over HTTP (anymodal /v1 and Open Inference Protocol /v2)
    and the Open Inference Protocol over gRPC. Every other setting comes from ANYMODAL_* environment
    variables; see the README."""
    from anymodal.service.server import run
    from anymodal.service.settings import Settings
    from pydantic import ValidationError

    overrides = {
        "HOST": host,
        "PORT": port,
        "GRPC_PORT": grpc_port,
        "WORKERS": workers,
        "MODEL_REPOSITORY": repository,
    }
    for name, value in overrides.items():
        if value is not None:
            os.environ[f"ANYMODAL_{name}"] = str(value)
    try:
        settings = Settings()
    except ValidationError as error:
        typer.secho(f"invalid setting: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None
    run(settings)


@app.command()
def openapi(
    out: Annotated[Path | None, typer.Option(help="Write here instead of standard output")] = None,
) -> None:
    """Print the service's OpenAPI document as YAML (the repository's openapi.yaml)."""
    import yaml
    from anymodal.service.app import create_app
    from anymodal.service.settings import Settings

    text = yaml.safe_dump(create_app(Settings()).openapi(), sort_keys=False, allow_unicode=True, width=100)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)


register_training(app)
register_evaluation(app)
register_client(app)
