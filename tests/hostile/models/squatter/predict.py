"""Finding 4 (abstract-socket hijack): in ``setup()``, binds and keeps listening on the abstract unix socket
names coglet uses for its worker channels (``@coglet-<pid>-<slot>``, pids 1-50, slots 0-3), so that an
instance started later, whose coglet would pick one of those names, fails or talks to this model instead.
``run`` returns how many names it holds and how many were taken already (its own coglet's)."""

import json
import socket

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def setup(self) -> None:
        self.held: list[socket.socket] = []
        self.taken: list[str] = []
        for pid in range(1, 51):
            for slot in range(4):
                name = f"coglet-{pid}-{slot}"
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.bind("\0" + name)
                    sock.listen(16)
                except OSError:
                    sock.close()
                    self.taken.append(name)
                    continue
                self.held.append(sock)

    def run(self, arg: str = Input(default="", description="unused")) -> str:
        return json.dumps({"held": len(self.held), "taken": self.taken})
