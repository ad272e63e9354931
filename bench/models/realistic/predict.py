"""A realistic input schema and no work: measures what five typed, validated inputs and a log line cost.

Five inputs of the common kinds (a required ``str``, an ``int`` and a ``float`` with bounds, a ``bool`` and a
``str`` with ``choices``); one log line per prediction; a short string computed from the inputs. No sleep.
"""

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def run(
        self,
        prompt: str = Input(description="Text to transform"),
        steps: int = Input(default=20, ge=1, le=100, description="Times to repeat the last word"),
        temperature: float = Input(default=0.7, ge=0.0, le=2.0, description="Reported back, rounded"),
        upper: bool = Input(default=False, description="Upper-case the result"),
        style: str = Input(default="plain", choices=["plain", "title", "reverse"], description="How to shape it"),
    ) -> str:
        print(f"processing {prompt!r}")
        text = {"plain": prompt, "title": prompt.title(), "reverse": prompt[::-1]}[style]
        if upper:
            text = text.upper()
        words = text.split()
        tail = words[-1] if words else ""
        return f"{text} {tail * min(steps, 3)} (steps={steps}, temperature={temperature:.2f})"
