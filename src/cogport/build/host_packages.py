"""``build.system_packages``: cogport cannot apt-get per model, so it checks that the host has them."""

from __future__ import annotations

import asyncio
import shutil


async def missing(packages: tuple[str, ...]) -> list[str] | None:
    """The packages ``dpkg`` does not know as installed; ``None`` when this host has no ``dpkg``."""
    if not packages:
        return []
    dpkg_query = shutil.which("dpkg-query")
    if dpkg_query is None:
        return None
    names = [package.split("=", 1)[0].strip() for package in packages]
    proc = await asyncio.create_subprocess_exec(
        dpkg_query,
        "-W",
        "-f=${Package}\t${db:Status-Abbrev}\n",
        *names,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    installed = set()
    for line in out.decode(errors="replace").splitlines():
        name, _, status = line.partition("\t")
        if status.startswith("ii"):
            installed.add(name.split(":", 1)[0])
    return [name for name in names if name.split(":", 1)[0] not in installed]
