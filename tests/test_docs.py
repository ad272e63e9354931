"""Every setting is documented in docs/configuration.md; the README's commands exist."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from cogport.settings import Settings

REPO = Path(__file__).resolve().parents[1]


GROUPS = ("build", "runtime", "webhooks", "inputs", "deployments", "storage", "ray", "metrics", "rate_limit", "web")


def env_names(model: type[BaseModel], prefix: str = "COGPORT_") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and name in GROUPS:
            names += env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_every_setting_is_documented() -> None:
    page = (REPO / "docs" / "configuration.md").read_text()
    missing = [name for name in env_names(Settings) if f"`{name}`" not in page]
    assert not missing, f"undocumented settings: {missing}"


def test_readme_commands_exist() -> None:
    readme = (REPO / "README.md").read_text()
    makefile = (REPO / "Makefile").read_text()
    for target in ("serve", "test"):
        assert f"make {target}" in readme
        assert f"\n{target}:" in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text()
