"""Reading coglet's Server-Sent Events: a token holding line separators other than CR and LF arrives whole.

coglet writes U+2028, U+0085, form feeds and the like raw inside a ``data:`` line's JSON; SSE ends lines at
CR and LF only. The hand-written reader this runtime had took httpx's ``aiter_lines`` (``str.splitlines``,
which breaks at all of them), cut such a line in two and failed the prediction; httpx-sse splits as SSE does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cogport.runtime.instance import Instance, InstanceOptions
from tests.support.runtime import Events, job, spec

SEPARATORS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@pytest.fixture
async def instance() -> AsyncIterator[Instance]:
    async with httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(5.0, read=120.0)) as client:
        started = Instance(spec("separators"), InstanceOptions(), client=client, name="test-separators")
        await started.start()
        try:
            yield started
        finally:
            await started.stop()


async def test_a_token_with_unicode_line_separators_arrives_whole(instance: Instance) -> None:
    events = Events()
    instance.reserve()
    await instance.predict(job(instance.spec, count=2), events)

    assert events.final is not None and events.final["status"] == "succeeded", events.final
    tokens = [f"token{SEPARATORS}0 ", f"token{SEPARATORS}1 "]
    outputs = [value for name, value in events.calls if name == "output"]
    assert outputs == [tokens[:1], tokens]
    assert events.final["output"] == tokens
    assert events.log_text == f"line{SEPARATORS}0\nline{SEPARATORS}1\n"
