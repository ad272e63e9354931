from typing import Optional

from cog import BaseModel, BasePredictor, Input, Path, Secret


class Output(BaseModel):
    summary: str
    total: float
    tags: list[str]
    document_bytes: Optional[int]


class Predictor(BasePredictor):
    def predict(
        self,
        prompt: str = Input(description="A required string", min_length=1, max_length=200),
        count: int = Input(description="An integer from 1 to 10", default=3, ge=1, le=10),
        scale: float = Input(description="A number from 0 to 1", default=0.5, ge=0.0, le=1.0),
        shout: bool = Input(description="Upper-case the summary", default=False),
        color: str = Input(description="One of three colors", default="red", choices=["red", "green", "blue"]),
        size: int = Input(description="One of three sizes", default=512, choices=[256, 512, 1024]),
        api_key: Secret = Input(description="A secret: masked in logs, never echoed", default=None),
        tags: list[str] = Input(description="A list of strings", default=["a", "b"]),
        note: Optional[str] = Input(description="An optional string", default=None),
        seed: int = Input(description="A random seed; leave it out for a random one", default=None),
        code: str = Input(description="Lower-case letters and digits", default="abc123", regex="^[a-z0-9]+$"),
        document: Optional[Path] = Input(description="An optional file", default=None),
    ) -> Output:
        summary = f"{prompt} x{count} scale={scale} color={color} size={size} code={code}"
        if note:
            summary += f" note={note}"
        if seed is not None:
            summary += f" seed={seed}"
        summary += " key=set" if api_key is not None and api_key.get_secret_value() else " key=unset"
        size_bytes = document.stat().st_size if document is not None else None
        return Output(
            summary=summary.upper() if shout else summary,
            total=count * scale,
            tags=list(tags),
            document_bytes=size_bytes,
        )
