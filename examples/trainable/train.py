import tempfile

from cog import BaseModel, Input, Path

import classifier


class TrainingOutput(BaseModel):
    weights: Path


def train(
    data: Path = Input(description="A CSV file with 'text' and 'label' columns"),
    smoothing: float = Input(description="Additive (Laplace) smoothing of word counts", default=1.0, ge=0.01, le=10.0),
    min_count: int = Input(description="Ignore words seen fewer times than this", default=1, ge=1, le=100),
) -> TrainingOutput:
    rows = classifier.read_examples(data)
    model = classifier.fit(rows, smoothing=smoothing, min_count=min_count)
    print(f"trained on {len(rows)} examples: {len(model['vocabulary'])} words, labels {sorted(model['labels'])}")
    out = Path(tempfile.mkdtemp()) / "weights.json"
    classifier.save(model, out)
    return TrainingOutput(weights=out)
