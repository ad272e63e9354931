"""First-start set-up: the admin account and its token."""

from __future__ import annotations

import logging
import sys

from sqlalchemy import select

from cogport.db.engine import Database
from cogport.db.tables import ApiToken
from cogport.identifiers import hash_token
from cogport.ops import accounts
from cogport.settings import Settings

log = logging.getLogger(__name__)


async def ensure_admin(database: Database, settings: Settings) -> str | None:
    """Create the admin on a fresh database; returns a newly generated token to show once."""
    async with database.session() as session:
        admin = await accounts.any_admin(session)
        if admin is None:
            admin = await accounts.get_by_username(session, settings.admin_username)
            if admin is None:
                admin = await accounts.create_account(session, settings.admin_username, is_admin=True)
            else:
                admin.is_admin = True
            _, plain = await accounts.create_token(session, admin, token=settings.admin_token, label="bootstrap")
            return None if settings.admin_token else plain
        if settings.admin_token:
            known = await session.scalar(
                select(ApiToken).where(ApiToken.token_hash == hash_token(settings.admin_token))
            )
            if known is None:
                await accounts.create_token(session, admin, token=settings.admin_token, label="COGPORT_ADMIN_TOKEN")
            elif known.revoked_at is not None:
                # The operator set it, so it must work: a revoked one would lock them out for good.
                log.warning(
                    "COGPORT_ADMIN_TOKEN was revoked (at %s); restored, as it is set. Unset it, or set a new one, "
                    "to retire it for good.",
                    known.revoked_at.isoformat(),
                )
                await accounts.restore_token(session, known)
    return None


def announce_admin_token(token: str, username: str) -> None:
    print(
        f"\ncogport: created the admin account {username!r}. Its API token (shown only this once):\n  {token}\n",
        file=sys.stderr,
        flush=True,
    )
