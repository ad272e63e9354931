"""The Vercel AI SDK's Replicate provider, majors 5, 6 and 7 (``ai`` with the ``@ai-sdk/replicate`` built for
it), generating an image with ``examples/image`` behind a reverse proxy, configured with the provider's
``baseURL`` option.

The provider posts ``{"input": {"prompt", "num_outputs", ...providerOptions.replicate}}`` with ``Prefer: wait``
to ``/v1/models/{owner}/{name}/predictions`` (or ``/v1/predictions`` with ``version`` for ``owner/name:id``),
then fetches each output URL with no token; ai 7 refuses to download from ``localhost`` and private addresses
unless the URL has the ``baseURL``'s origin, which cogport's output URLs have. ``prompt`` and ``num_outputs``
are not inputs of the example: like Replicate, cogport ignores inputs a model does not declare.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support import npm
from tests.support.models import push
from tests.support.pushing import EXAMPLES, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.test_files_e2e import png, png_size

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
MAJORS = {
    5: ("ai@5.0.277", "@ai-sdk/replicate@1.0.39"),
    6: ("ai@6.0.326", "@ai-sdk/replicate@2.0.57"),
    7: ("ai@7.0.173", "@ai-sdk/replicate@3.0.46"),
}


@pytest.mark.parametrize("major", sorted(MAJORS))
def test_generate_image(live_server: LiveServer, proxied_url: str, major: int) -> None:
    cache = npm.installed(*MAJORS[major])
    version = push(live_server, EXAMPLES / "image", "image")
    config = {
        "baseURL": f"{proxied_url}/v1",
        "apiToken": ADMIN_TOKEN,
        "version": version,
        "png": base64.b64encode(png(6, 4)).decode(),
    }
    out: dict[str, Any] = npm.run_script(cache, "ai_image.js", json.dumps(config))

    assert out["generateImage"] == ("experimental_generateImage" if major == 5 else "generateImage")
    for generated in (out["byModel"], out["byVersion"]):
        assert generated["mediaType"] == "image/png"
        assert png_size(base64.b64decode(generated["base64"])) == (2, 1)

    requests = out["requests"]
    posts = [r for r in requests if r["method"] == "POST"]
    assert [urlsplit(r["url"]).path for r in posts] == ["/v1/models/admin/image/predictions", "/v1/predictions"]
    assert all(r["prefer"] == "wait" and r["authorization"] == f"Bearer {ADMIN_TOKEN}" for r in posts)
    assert posts[0]["body"]["input"]["prompt"] == "grayscale it" and "version" not in posts[0]["body"]
    assert posts[1]["body"]["version"] == version
    # The image itself: the output URL, on the proxy, fetched without the token.
    downloads = [r for r in requests if r["method"] == "GET"]
    assert len(downloads) == 2
    assert all(r["url"].startswith(f"{proxied_url}/v1/files/") and r["authorization"] is None for r in downloads)
