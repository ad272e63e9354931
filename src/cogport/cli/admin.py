"""``cogport accounts`` and ``cogport tokens``: admin commands over the HTTP API."""

from __future__ import annotations

import typer

from cogport.cli.client import BaseUrlOption, Client, TokenOption, handle_errors, print_json

accounts_app = typer.Typer(help="Manage users and organizations (admin).", no_args_is_help=True)
tokens_app = typer.Typer(help="Manage API tokens (admin).", no_args_is_help=True)


@accounts_app.command("create")
@handle_errors
def create_account(
    name: str = typer.Argument(..., help="The username of the new account."),
    org: bool = typer.Option(False, "--org", help="Create an organization."),
    member: list[str] = typer.Option([], "--member", help="A member of the organization (repeatable)."),
    display_name: str | None = typer.Option(None, "--name", help="The display name."),
    admin: bool = typer.Option(False, "--admin", help="Make the user an admin."),
    json_out: bool = typer.Option(False, "--json", help="Print the account as JSON."),
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """Create a user, or an organization with --org."""
    body = {
        "username": name,
        "type": "organization" if org else "user",
        "members": member,
        "name": display_name,
        "is_admin": admin,
    }
    account = Client(base_url, token).request("POST", "/admin/v1/accounts", json=body)
    if json_out:
        print_json(account)
    else:
        members = f" (members: {', '.join(account['members'])})" if account.get("members") else ""
        typer.echo(f"created {account['type']} {account['username']}{members}")


@accounts_app.command("list")
@handle_errors
def list_accounts(base_url: str = BaseUrlOption, token: str = TokenOption) -> None:
    """List every account."""
    for account in Client(base_url, token).request("GET", "/admin/v1/accounts"):
        flag = " (admin)" if account["is_admin"] else ""
        typer.echo(f"{account['username']}\t{account['type']}{flag}")


@accounts_app.command("add-member")
@handle_errors
def add_member(org: str, user: list[str], base_url: str = BaseUrlOption, token: str = TokenOption) -> None:
    """Add users to an organization."""
    Client(base_url, token).request("PATCH", f"/admin/v1/accounts/{org}/members", json={"add": user})
    typer.echo(f"added {', '.join(user)} to {org}")


@tokens_app.command("create")
@handle_errors
def create_token(
    name: str = typer.Argument(..., help="The user the token belongs to."),
    label: str | None = typer.Option(None, "--label", help="A note to remember the token by."),
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """Create an API token for a user; the token is the last line printed."""
    created = Client(base_url, token).request("POST", f"/admin/v1/accounts/{name}/tokens", json={"label": label})
    typer.echo(f"token for {created['account']} (shown once):", err=True)
    typer.echo(created["token"])


@tokens_app.command("list")
@handle_errors
def list_tokens(
    name: str = typer.Argument(..., help="The user whose tokens to list."),
    json_out: bool = typer.Option(False, "--json", help="Print the tokens as JSON."),
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """List a user's tokens: id, hint (never the token), created, revoked, label."""
    tokens = Client(base_url, token).request("GET", f"/admin/v1/accounts/{name}/tokens")
    if json_out:
        print_json(tokens)
        return
    for row in tokens:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        typer.echo(f"{row['id']}\t{row['hint']}\t{row['created_at']}\t{state}\t{row['label'] or ''}".rstrip("\t"))


@tokens_app.command("revoke")
@handle_errors
def revoke_token(
    value: str = typer.Argument(..., metavar="TOKEN", help="The token to revoke (or its id, with --id)."),
    by_id: bool = typer.Option(False, "--id", help="TOKEN is the id that `cogport tokens list` shows."),
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """Revoke a token; it stops working within seconds on every server process."""
    client = Client(base_url, token)
    if by_id:
        if not value.isdigit():
            raise typer.BadParameter("with --id, TOKEN is a number", param_hint="TOKEN")
        revoked = client.request("DELETE", f"/admin/v1/tokens/{value}")
    else:
        revoked = client.request("POST", "/admin/v1/tokens/revoke", json={"token": value})
    typer.echo(f"revoked token {revoked['id']} ({revoked['hint']}) of {revoked['account']}")
