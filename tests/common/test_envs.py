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


def env_pins(env: Path) -> dict[str, str]:
    deps = yaml.safe_load(env.read_text())["dependencies"]
    return pins(next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d))


# Environments of their own, pinned by a requirements file instead of pyproject.toml.
OWN = {"nerfstudio.yaml": "nerfstudio.txt"}


def test_every_env_pins_like_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_pins = pins(project["dependencies"])
    envs = sorted(env for env in (ROOT / "envs").glob("*.yaml") if env.name not in OWN)
    assert envs
    for env in envs:
        for name, version in env_pins(env).items():
            assert pip_pins.get(name) == version, f"{env.name}: {name}=={version} vs pyproject"


def test_own_envs_pin_like_their_requirements():
    for env, requirements in OWN.items():
        lines = (ROOT / "envs" / requirements).read_text().splitlines()
        wanted = pins([line for line in lines if line.strip() and not line.startswith("#")])
        assert env_pins(ROOT / "envs" / env) == wanted, f"{env} vs {requirements}"
        # torch as in the main environment: the one build this machine and the cluster share
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert wanted["torch"] == pins(project["dependencies"])["torch"]


def test_every_rule_names_an_existing_env():
    for smk in (ROOT / "rules").glob("*.smk"):
        for env in re.findall(r'"\.\./(envs/[^"]+)"', smk.read_text()):
            assert (ROOT / env).is_file(), f"{smk.name} names missing {env}"
