"""The Apptainer image: its definition pins what pyproject.toml pins, and Snakemake's
``--sdm apptainer`` (profiles/apptainer) wraps each job in ``apptainer exec`` of it.

No apptainer runs here: a stand-in on PATH records how Snakemake calls it and runs the wrapped
command on the host, as the real one would inside the image.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, copy_repo

DEFINITION = ROOT / "containers" / "lsai-tracks.def"
PROFILE = ROOT / "profiles" / "apptainer" / "config.yaml"

#: pip options that change nothing about what gets installed; anything else (-r, -c, -e,
#: --index-url, --upgrade...) could bring in a version that the definition does not name.
HARMLESS_OPTIONS = {"--no-cache-dir", "--no-compile", "--root-user-action=ignore"}


def normalized(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: list[str]) -> dict[str, str]:
    """``name==version`` requirements as {normalized name: version}; anything else fails."""
    out: dict[str, str] = {}
    for req in requirements:
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_.-]*)==([A-Za-z0-9_.+!-]+)", req.strip())
        if not match:
            raise ValueError(f"not an exact pin: {req!r}")
        name = normalized(match.group(1))
        if name in out and out[name] != match.group(2):
            raise ValueError(f"{name} pinned twice: {out[name]} and {match.group(2)}")
        out[name] = match.group(2)
    return out


def sections(text: str) -> dict[str, str]:
    """An Apptainer definition's ``%sections`` (and the header, under ``header``)."""
    found: dict[str, list[str]] = {"header": []}
    current = "header"
    for line in text.splitlines():
        if match := re.match(r"^%(\w+)\s*$", line):
            current = match.group(1)
            found[current] = []
        else:
            found[current].append(line)
    return {name: "\n".join(lines) for name, lines in found.items()}


def shell_commands(script: str) -> list[list[str]]:
    """The commands of a shell script, each split into words (continuations joined,
    comments dropped)."""
    joined = re.sub(r"\\\n", " ", script)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def pip_installs(text: str) -> list[dict[str, str]]:
    """The pins of each ``pip install`` of the definition's %post, in order."""
    installs = []
    for words in shell_commands(sections(text).get("post", "")):
        words = [w for w in words if w]
        if not words:
            continue
        if words[:3] == ["python", "-m", "pip"] or words[:3] == ["python3", "-m", "pip"]:
            words = words[3:]
        elif words[0] in {"pip", "pip3"}:
            words = words[1:]
        else:
            continue
        if words[:1] != ["install"]:
            continue
        options = [w for w in words[1:] if w.startswith("-")]
        if unknown := sorted(set(options) - HARMLESS_OPTIONS):
            raise ValueError(f"pip option that may change what is installed: {unknown}")
        installs.append(pins([w for w in words[1:] if not w.startswith("-")]))
    return installs


def project_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return pins(project["dependencies"])


def test_definition_installs_torch_first_then_every_pin_of_pyproject():
    wanted = project_pins()
    installs = pip_installs(DEFINITION.read_text())
    assert len(installs) == 2, installs
    first, rest = installs
    assert list(first) == ["torch", "torchvision"]
    assert first == {"torch": wanted["torch"], "torchvision": wanted["torchvision"]}
    missing = {n: v for n, v in wanted.items() if n not in rest}
    assert not missing, f"pyproject pins that the image does not install: {missing}"
    other = {n: (v, wanted.get(n)) for n, v in rest.items() if wanted.get(n) != v}
    assert not other, f"image pin vs pyproject pin: {other}"


def test_pin_reader_refuses_what_would_unpin_the_image():
    head = "Bootstrap: docker\nFrom: python:3.11-slim-bookworm\n\n%post\n"
    ok = head + "    python -m pip install --no-cache-dir \\\n        numpy==2.4.6 \\\n"
    assert pip_installs(ok + "        pyyaml==6.0.3\n") == [{"numpy": "2.4.6", "pyyaml": "6.0.3"}]
    for bad in (
        ok + "        scipy\n",  # unpinned
        ok + "        scipy>=1.0\n",  # a range
        ok + "        numpy==2.0.0\n",  # the same package twice, two versions
        head + "    pip install -r requirements.txt\n",
        head + "    pip install --extra-index-url https://example.org numpy==2.4.6\n",
    ):
        with pytest.raises(ValueError):
            pip_installs(bad)


def test_definition_is_python_311_and_offline():
    parts = sections(DEFINITION.read_text())
    header = dict(
        line.split(":", 1) for line in parts["header"].splitlines() if re.match(r"^\w+:", line)
    )
    assert header["Bootstrap"].strip() == "docker"
    assert re.fullmatch(r"python:3\.11[-.\w]*(@sha256:[0-9a-f]+)?", header["From"].strip())
    exports = dict(
        words[1].split("=", 1)
        for words in shell_commands(parts["environment"])
        if words[:1] == ["export"]
    )
    assert exports["HF_HUB_OFFLINE"] == "1" and exports["WANDB_MODE"] == "offline"
    assert exports["MPLBACKEND"] == "Agg" and exports["TORCH_HOME"].startswith("/")
    assert "apptainer build lsai-tracks.sif containers/lsai-tracks.def" in parts["help"]


def test_profile_runs_jobs_in_the_image_with_gpus():
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["software-deployment-method"] == "apptainer"
    assert "--nv" in shlex.split(profile["apptainer-args"])
    # a profile's `config:` list replaces the site profile's (its resource_maps) when stacked
    assert "config" not in profile


# --- Snakemake with --sdm apptainer, against a stand-in apptainer --------------------------

FAKE_APPTAINER = """#!{python}
import json, os, subprocess, sys

args = sys.argv[1:]
with open(os.environ["FAKE_APPTAINER_LOG"], "a") as log:
    log.write(json.dumps({{"argv": args, "cwd": os.getcwd()}}) + "\\n")
if args == ["--version"]:
    print("apptainer version 1.3.4")
    sys.exit(0)
if args[:1] != ["exec"]:
    sys.exit("fake apptainer: only --version and exec")
# exec [options] IMAGE SHELL -c COMMAND: run COMMAND with SHELL here, as the image would
c = len(args) - 1 - args[::-1].index("-c")
image, shell = args[c - 2], args[c - 1]
if not os.path.isfile(image):
    sys.exit(f"FATAL: could not open image {{image}}: no such file")
# The image's environment: its own python first, the host's PYTHONPATH dropped (%environment).
env = {{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}}
env["PATH"] = os.pathsep.join([os.environ["FAKE_IMAGE_BIN"], env["PATH"]])
sys.exit(subprocess.run([shell, "-c", *args[c + 1:]], env=env).returncode)
"""

# The image's python as a job sees it: every dependency, but not the workflow package (the
# image does not install the checkout), so a job imports it only through what the rule sets up.
IMAGE_PYTHON = """#!{python} -S
import runpy, sys

sys.path.append({site_packages!r})  # the venv's site-packages, without its .pth files
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

DEMO = "data/demo/distance/demo/manifest.json"  # distance_demo: a CPU job of seconds


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A copy of the workflow, the stand-in apptainer first on PATH, and its call log."""
    tmp = tmp_path_factory.mktemp("apptainer")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    apptainer = bin_dir / "apptainer"
    apptainer.write_text(FAKE_APPTAINER.format(python=sys.executable))
    apptainer.chmod(0o755)
    image_bin = tmp / "image-bin"
    image_bin.mkdir()
    (image_bin / "python").write_text(
        IMAGE_PYTHON.format(python=sys.executable, site_packages=sysconfig.get_path("purelib"))
    )
    (image_bin / "python").chmod(0o755)
    image = tmp / "images" / "lsai-tracks.sif"
    image.parent.mkdir()
    image.write_bytes(b"")
    repo = tmp / "repo"
    repo.mkdir()
    return {
        "bin": bin_dir,
        "image_bin": image_bin,
        "image": image,
        "repo": copy_repo(repo),
        "log": tmp / "calls.jsonl",
    }


def snakemake(fake: dict[str, Path], *args: str) -> list[dict]:
    """Snakemake in the copy with the stand-in on PATH; the stand-in's calls (a run must pass)."""
    fake["log"].unlink(missing_ok=True)
    path = os.pathsep.join([str(fake["bin"]), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {
        **os.environ,
        "PATH": path,
        "FAKE_APPTAINER_LOG": str(fake["log"]),
        "FAKE_IMAGE_BIN": str(fake["image_bin"]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", *args],
        cwd=fake["repo"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    if not fake["log"].exists():
        return []
    return [json.loads(line) for line in fake["log"].read_text().splitlines()]


APPTAINER = ["--sdm", "apptainer", "--profile", "profiles/apptainer"]


def test_dry_run_with_apptainer_only_checks_its_version(fake):
    calls = snakemake(fake, "-n", *APPTAINER)
    assert calls and all(call["argv"] == ["--version"] for call in calls)


def test_the_stand_in_image_python_lacks_the_workflow_package(fake, tmp_path):
    """So the job test below shows that the rules, not the install, give jobs the package."""
    script = tmp_path / "probe.py"
    script.write_text("import numpy\nimport workflow\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [fake["image_bin"] / "python", script], cwd=tmp_path, capture_output=True, text=True,
        env=env,
    )  # fmt: skip
    assert result.returncode != 0 and "No module named 'workflow'" in result.stderr


@pytest.mark.slow
def test_without_sdm_apptainer_the_image_is_not_used(fake):
    out = fake["repo"] / DEMO
    out.unlink(missing_ok=True)
    calls = snakemake(fake, DEMO, "--config", f"container={fake['image']}")
    assert calls == [] and out.is_file()


@pytest.mark.slow
def test_jobs_run_through_apptainer_exec_of_the_configured_image(fake):
    out = fake["repo"] / DEMO
    out.unlink(missing_ok=True)
    calls = snakemake(fake, *APPTAINER, DEMO, "--config", f"container={fake['image']}")
    assert ["--version"] in [call["argv"] for call in calls]
    execs = [call["argv"] for call in calls if call["argv"][:1] == ["exec"]]
    assert len(execs) == 1, execs  # one job
    argv = execs[0]
    c = len(argv) - 1 - argv[::-1].index("-c")
    options, image, shell, command = argv[1 : c - 2], argv[c - 2], argv[c - 1], argv[c + 1]
    assert image == str(fake["image"])
    assert "--nv" in options
    assert options[options.index("--home") + 1] == str(fake["repo"])
    assert shell == "bash" and len(argv) == c + 2
    assert "python scripts/distance.py demo --root" in command and DEMO in command
    assert json.loads(out.read_text())  # the job ran, through the stand-in, and wrote it


@pytest.mark.slow
def test_ddp_runs_in_the_image_start_their_ranks_with_torchrun(fake):
    """The image has no srun: on Leonardo a node's 4 ranks start with torchrun inside it."""
    path = os.pathsep.join([str(fake["bin"]), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {**os.environ, "PATH": path, "FAKE_APPTAINER_LOG": str(fake["log"])}
    leonardo = [
        "--profile",
        "profiles/leonardo",
        *APPTAINER,
        "--configfile",
        "config/leonardo.yaml",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", *leonardo],
        cwd=fake["repo"], capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    pretrain = [line for line in result.stdout.splitlines() if "scripts/flip.py train" in line]
    assert len(pretrain) == 6  # pre-training and tuning of 3 mask ratios, each on one node
    assert all(
        "torchrun --standalone --nnodes=1 --nproc-per-node=4 python scripts/flip.py" in line
        and "srun" not in line
        for line in pretrain
    )
