"""``cog.yaml``: parsed and checked into a typed :class:`CogConfig`; unknown keys become warnings.

Cog's own reference is ``docs/yaml.md`` in the cog repository. What cogport does with each key is
in ``docs/push.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from cogport.build.errors import BuildError

BUILD_KEYS = {
    "python_version",
    "python_packages",
    "python_requirements",
    "system_packages",
    "run",
    "pre_install",
    "gpu",
    "cuda",
    "cudnn",
    "sdk_version",
    "environment",
}
IGNORED_BUILD_KEYS = {"cog_runtime": "cogport always runs coglet", "fast": "cogport has no image layers to speed up"}
TOP_KEYS = {"build", "predict", "run", "train", "concurrency", "environment"}
IGNORED_TOP_KEYS = {
    "image": "cogport builds no images",
    "weights": "weights are not downloaded at build time",
    "tests": "cogport does not run model tests",
}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
DENIED_ENV = {"PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONUNBUFFERED", "PYTHONHOME"}
DENIED_ENV_PREFIXES = ("COG_", "R8_")


@dataclass(frozen=True)
class BuildConfig:
    python_version: str | None = None
    python_packages: tuple[str, ...] = ()
    python_requirements: str | None = None
    system_packages: tuple[str, ...] = ()
    run: tuple[str, ...] = ()
    pre_install: tuple[str, ...] = ()
    gpu: bool = False
    cuda: str | None = None
    sdk_version: str | None = None


@dataclass(frozen=True)
class CogConfig:
    build: BuildConfig
    predict: str | None = None
    train: str | None = None
    concurrency: int | None = None
    environment: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


class _ScalarText(str):
    """A YAML float kept as written, so ``python_version: 3.10`` stays ``"3.10"``."""


class _Loader(yaml.SafeLoader):
    pass


def _float_as_text(loader: yaml.SafeLoader, node: yaml.nodes.Node) -> Any:
    assert isinstance(node, yaml.ScalarNode)
    return _ScalarText(node.value)


_Loader.add_constructor("tag:yaml.org,2002:float", _float_as_text)


def parse(text: str) -> CogConfig:
    """Parse ``cog.yaml``; :class:`BuildError` says what is wrong and where."""
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise BuildError(f"cog.yaml is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BuildError("cog.yaml must be a mapping (keys such as build: and predict:)")
    warnings: list[str] = []
    _check_keys(data, TOP_KEYS, IGNORED_TOP_KEYS, "", warnings)
    build_data = data.get("build") or {}
    if not isinstance(build_data, dict):
        raise BuildError("cog.yaml: build must be a mapping")
    _check_keys(build_data, BUILD_KEYS, IGNORED_BUILD_KEYS, "build.", warnings)
    if "cudnn" in build_data:
        warnings.append("build.cudnn is informational: CUDA libraries come from the Python packages (e.g. torch)")
    build = _build(build_data, warnings)
    predict = _ref(data, "predict")
    run_ref = _ref(data, "run")
    if predict and run_ref and predict != run_ref:
        raise BuildError("cog.yaml sets both predict and run (its new name) to different values; keep one")
    environment = _environment(build_data.get("environment"), "build.environment")
    environment.update(_environment(data.get("environment"), "environment"))
    return CogConfig(
        build=build,
        predict=predict or run_ref,
        train=_ref(data, "train"),
        concurrency=_concurrency(data.get("concurrency")),
        environment=environment,
        warnings=tuple(warnings),
    )


def _check_keys(
    data: dict[Any, Any], known: set[str], ignored: dict[str, str], prefix: str, warnings: list[str]
) -> None:
    for key in data:
        name = f"{prefix}{key}"
        if key in ignored:
            warnings.append(f"{name} is ignored: {ignored[key]}")
        elif key not in known:
            warnings.append(f"unknown key {name} in cog.yaml (ignored)")


def _build(data: dict[str, Any], warnings: list[str]) -> BuildConfig:
    if data.get("python_packages") and data.get("python_requirements"):
        raise BuildError("cog.yaml: set either build.python_packages or build.python_requirements, not both")
    cuda = _optional_text(data, "cuda")
    gpu = data.get("gpu", False)
    if not isinstance(gpu, bool):
        raise BuildError("cog.yaml: build.gpu must be true or false")
    if cuda:
        warnings.append(f"build.cuda {cuda} is informational: install a matching torch build in python_packages")
    return BuildConfig(
        python_version=_optional_text(data, "python_version"),
        python_packages=_strings(data, "python_packages"),
        python_requirements=_optional_text(data, "python_requirements"),
        system_packages=_strings(data, "system_packages"),
        run=_commands(data.get("run"), "build.run", warnings),
        pre_install=_commands(data.get("pre_install"), "build.pre_install", warnings),
        gpu=gpu,
        cuda=cuda,
        sdk_version=_optional_text(data, "sdk_version"),
    )


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BuildError(f"cog.yaml: build.{key} must be a string")
    return str(value).strip() or None


def _strings(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BuildError(f"cog.yaml: build.{key} must be a list of strings")
    return tuple(item.strip() for item in value if item.strip())


def _commands(value: Any, where: str, warnings: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BuildError(f"cog.yaml: {where} must be a list of commands")
    commands: list[str] = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("command"), str):
            if item.get("mounts"):
                warnings.append(f"{where}: mounts (build secrets) are not supported and are ignored")
            commands.append(item["command"])
        elif isinstance(item, str):
            commands.append(item)
        else:
            raise BuildError(f"cog.yaml: each {where} entry must be a string or have a command: key")
    return tuple(commands)


def _ref(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or ":" not in value or not value.split(":", 1)[1]:
        raise BuildError(f"cog.yaml: {key} must look like 'predict.py:Predictor', got {value!r}")
    path = value.split(":", 1)[0]
    if path.startswith("/") or ".." in path.split("/") or not path.endswith(".py"):
        raise BuildError(f"cog.yaml: {key} must name a .py file inside the model directory, got {value!r}")
    return value


def _concurrency(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BuildError("cog.yaml: concurrency must be a mapping such as {max: 4}")
    maximum = value.get("max")
    if maximum is None:
        return None
    if isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < 1:
        raise BuildError("cog.yaml: concurrency.max must be a positive integer")
    return maximum


def _environment(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        items = [(str(k), "" if v is None else str(v)) for k, v in value.items()]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = []
        for item in value:
            name, sep, text = item.partition("=")
            if not sep:
                raise BuildError(f"cog.yaml: {where} entries must look like NAME=value, got {item!r}")
            items.append((name.strip(), text))
    else:
        raise BuildError(f"cog.yaml: {where} must be a list of NAME=value strings")
    environment: dict[str, str] = {}
    for name, text in items:
        if not ENV_NAME.match(name):
            raise BuildError(f"cog.yaml: {name!r} in {where} is not a valid environment variable name")
        if name in DENIED_ENV or name.startswith(DENIED_ENV_PREFIXES):
            raise BuildError(f"cog.yaml: {where} may not set {name} (reserved for the runtime)")
        # Like Docker's ENV: $NAME and ${NAME} refer to variables defined earlier in the list.
        environment[name] = ENV_REFERENCE.sub(lambda m: environment.get(m.group(1) or m.group(2), ""), text)
    return environment
