"""The `anymodal` command: the service's commands and the training package's."""

from __future__ import annotations

import typer

from training.cli import configure_logging, register

app = typer.Typer(
    help="anymodal: robust multimodal prediction from any subset of modalities.",
    no_args_is_help=True,
    add_completion=False,
)
app.callback()(configure_logging)
register(app)
