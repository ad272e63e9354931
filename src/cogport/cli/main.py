"""The ``cogport`` command line."""

from __future__ import annotations

import typer

from cogport.cli.admin import accounts_app, tokens_app
from cogport.cli.push import push
from cogport.cli.resources import deployments_app, instances, models_app, predictions_app
from cogport.cli.run import run
from cogport.cli.serve import serve

app = typer.Typer(
    help="cogport: the Replicate API for Cog models, self-hosted.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.command("serve")(serve)
app.command("push")(push)
app.command("run")(run)
app.command("instances")(instances)
app.add_typer(accounts_app, name="accounts")
app.add_typer(tokens_app, name="tokens")
app.add_typer(predictions_app, name="predictions")
app.add_typer(models_app, name="models")
app.add_typer(deployments_app, name="deployments")


def main() -> None:
    app()
