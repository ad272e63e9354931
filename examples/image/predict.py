import tempfile

from cog import BasePredictor, Input, Path
from PIL import Image, ImageOps


class Predictor(BasePredictor):
    def predict(
        self,
        image: Path = Input(description="The image to transform"),
        effect: str = Input(description="What to do to it", default="grayscale", choices=["grayscale", "invert", "none"]),
        width: int = Input(description="Resize to this width, keeping the aspect ratio (0: keep)", default=0, ge=0, le=4096),
    ) -> Path:
        img = Image.open(image)
        img.load()
        if effect == "grayscale":
            img = ImageOps.grayscale(img)
        elif effect == "invert":
            img = ImageOps.invert(img.convert("RGB"))
        if width:
            height = max(1, round(img.height * width / img.width))
            img = img.resize((width, height))
        out = Path(tempfile.mkdtemp()) / "output.png"
        img.save(out)
        return out
