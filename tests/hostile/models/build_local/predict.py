from cog import BasePredictor


class Runner(BasePredictor):
    def predict(self, arg: str = "") -> str:
        return arg
