"""The conda environments (for `--sdm conda`) pin exactly what the pip install pins."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def pins(requirements: list[str]) -> dict[str, str]:
    out = {}
    for req in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", req.strip())
        assert match, f"not an exact pin: {req!r}"
        out[match.group(1).lower()] = match.group(2)
    return out


def test_every_env_pins_like_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_pins = pins(project["dependencies"])
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        deps = yaml.safe_load(env.read_text())["dependencies"]
        pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
        for name, version in pins(pip_section).items():
            assert pip_pins.get(name) == version, f"{env.name}: {name}=={version} vs pyproject"


def test_every_rule_names_an_existing_env():
    for smk in (ROOT / "rules").glob("*.smk"):
        for env in re.findall(r'"\.\./(envs/[^"]+)"', smk.read_text()):
            assert (ROOT / env).is_file(), f"{smk.name} names missing {env}"
