import os
import tempfile
import urllib.request
from typing import Optional

from cog import BaseModel, BasePredictor, Input, Path

import classifier

DEFAULT_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights.json")


class Output(BaseModel):
    label: str
    confidence: float


class Predictor(BasePredictor):
    def setup(self, weights: Optional[Path] = None) -> None:
        """Load trained weights (a path or URL from a training), or the weights bundled with the model."""
        self.model = classifier.load(self._local(weights) if weights else DEFAULT_WEIGHTS)
        print(f"loaded a classifier for labels {sorted(self.model['labels'])}")

    @staticmethod
    def _local(weights) -> str:
        location = str(weights)
        if location.startswith(("http://", "https://", "data:")):
            target = os.path.join(tempfile.mkdtemp(), "weights.json")
            urllib.request.urlretrieve(location, target)
            return target
        if os.path.isdir(location):
            return os.path.join(location, "weights.json")
        return location

    def predict(self, text: str = Input(description="The text to classify")) -> Output:
        label, probabilities = classifier.predict(self.model, text)
        return Output(label=label, confidence=round(probabilities[label], 4))
