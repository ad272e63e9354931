"""cog.yaml parsing: the typed config, warnings for keys cogport ignores, clear errors."""

from __future__ import annotations

import pytest

from cogport.build.cogyaml import parse
from cogport.build.errors import BuildError


def test_a_full_cog_yaml() -> None:
    config = parse(
        """
build:
  python_version: 3.10
  gpu: true
  cuda: "12.1"
  python_packages:
    - numpy==2.0.0
  system_packages: [ffmpeg]
  run:
    - echo one
    - command: echo two
  environment:
    - A=1
    - B=${A}2
sdk_version: "0.23.1"
predict: predict.py:Predictor
train: train.py:train
concurrency:
  max: 4
image: r8.im/me/model
"""
    )
    assert config.build.python_version == "3.10"  # not the float 3.1
    assert config.build.gpu is True
    assert config.build.python_packages == ("numpy==2.0.0",)
    assert config.build.system_packages == ("ffmpeg",)
    assert config.build.run == ("echo one", "echo two")
    assert config.environment == {"A": "1", "B": "12"}
    assert config.predict == "predict.py:Predictor"
    assert config.train == "train.py:train"
    assert config.concurrency == 4
    assert any("image is ignored" in w for w in config.warnings)
    assert any("unknown key sdk_version" in w for w in config.warnings)  # it belongs under build:
    assert any("build.cuda 12.1 is informational" in w for w in config.warnings)


def test_run_is_the_new_name_of_predict() -> None:
    assert parse("run: predict.py:Runner\n").predict == "predict.py:Runner"
    with pytest.raises(BuildError, match="both predict and run"):
        parse("run: a.py:A\npredict: b.py:B\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("build: [\n", "not valid YAML"),
        ("- a\n", "must be a mapping"),
        ("build:\n  python_packages: numpy\n", "build.python_packages must be a list of strings"),
        ("build:\n  python_packages: [a]\n  python_requirements: r.txt\n", "not both"),
        ("build:\n  gpu: maybe\n", "build.gpu must be true or false"),
        ("predict: predict.py\n", "must look like 'predict.py:Predictor'"),
        ("predict: ../up.py:P\n", "inside the model directory"),
        ("concurrency:\n  max: 0\n", "positive integer"),
        ("environment:\n  - NOEQUALS\n", "NAME=value"),
        ("environment:\n  - PATH=/x\n", "may not set PATH"),
        ("environment:\n  - COG_WEIGHTS=x\n", "may not set COG_WEIGHTS"),
        ("environment:\n  - 1BAD=x\n", "not a valid environment variable name"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(BuildError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)
