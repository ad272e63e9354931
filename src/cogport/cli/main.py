"""The ``cogport`` command line."""

from __future__ import annotations

import typer

from cogport.cli.admin import accounts_app, tokens_app
from cogport.cli.push import push
from cogport.cli.serve import serve

app = typer.Typer(
    help="cogport: the Replicate API for Cog models, self-hosted.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.command("serve")(serve)
app.command("push")(push)
app.add_typer(accounts_app, name="accounts")
app.add_typer(tokens_app, name="tokens")


def main() -> None:
    app()
