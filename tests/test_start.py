"""What the server's start does not do: import what the first request does not need, or run Alembic on a
database already at the newest migration. (How long a start takes is measured by ``python -m bench start``,
never asserted here.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from cogport.db import engine
from cogport.db.engine import HEAD, MIGRATIONS, Database
from cogport.settings import Settings

NOT_AT_START = (
    "alembic",  # migrations: imported only when the database is not at HEAD
    "mako",
    "jinja2",  # the web playground's templates: at its first page
    "asyncpg",  # PostgreSQL only
    "botocore",  # S3 storage only
    "aiobotocore",
    "ray",  # the Ray backend only
    "pathspec",  # a push's or a build's ignore rules
    "yaml",  # cog.yaml: a push, a build, a bundle's manifest
    "websockets",  # no WebSocket routes
    "replicate",  # a client library: tests and benchmarks only
    "hypothesis",
)

NOT_AFTER_THE_LIFESPAN = (
    "httpcore",  # httpx's transports: the coglet client is made with the first instance, the input fetcher's at
    "certifi",  # its first fetch (a TLS client loads the CA bundle: ~20-50 ms of CPU)
)

STARTED = """
import asyncio, json, sys
from cogport.app import create_app
from cogport.settings import Settings

async def main() -> None:
    app = create_app(Settings(data_dir=sys.argv[1], port=0, register_examples=False, detect_gpus=False))
    async with app.router.lifespan_context(app):
        print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))

asyncio.run(main())
"""


def test_head_is_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD], "set cogport.db.engine.HEAD to the new head"


def test_importing_the_app_leaves_out_what_the_first_request_does_not_need() -> None:
    code = (
        "import json, sys; import cogport.cli.main, cogport.app; "
        f"print(json.dumps(sorted(m for m in {list(NOT_AT_START)!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_a_started_server_leaves_out_the_http_clients_it_has_not_used(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", STARTED, str(tmp_path / "data"), json.dumps(NOT_AFTER_THE_LIFESPAN)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


async def test_a_database_at_head_starts_without_alembic(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    database = Database(settings)
    try:
        await database.migrate()  # a fresh database: every migration runs
        async with database.engine.connect() as conn:
            assert await conn.run_sync(engine.revisions) == [HEAD]

        def refuse(_connection: object) -> None:
            raise AssertionError("Alembic ran on a database already at head")

        monkeypatch.setattr(engine, "_upgrade", refuse)
        await database.migrate()
    finally:
        await database.dispose()
