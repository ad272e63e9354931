"""Finding 5 (the upload gateway): returns a file of ``size`` bytes (coglet uploads it through the gateway)."""

from cog import BaseRunner, Input, Path


class Runner(BaseRunner):
    def run(self, size: int = Input(default=1024, description="Bytes in the output file")) -> Path:
        out = Path("/tmp/big.bin")
        with open(out, "wb") as handle:
            handle.write(b"x" * size)
        return out
