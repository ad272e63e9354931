import time

from cog import BaseRunner, ConcatenateIterator, Input


class Runner(BaseRunner):
    def run(
        self,
        prompt: str = Input(description="Text to echo back, one word at a time"),
        repeat: int = Input(description="How many times to say it", default=1, ge=1, le=10),
        delay: float = Input(description="Seconds to wait before each token", default=0.0, ge=0.0, le=2.0),
    ) -> ConcatenateIterator[str]:
        words = prompt.split()
        for round_ in range(repeat):
            for index, word in enumerate(words):
                if delay:
                    time.sleep(delay)
                first = round_ == 0 and index == 0
                yield word if first else " " + word
