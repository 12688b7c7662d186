"""Groups side by side: each group's experiments in a file of its own, its runs in a folder
of its own, the shared data preparation and baselines computed once for everyone.

A group's file is ``groups/<name>.yaml`` and holds only experiments, per track, in the
config's own form::

    flip:
      experiments:
        cyclip: {loss: "variants/flip/cyclip.py:CyclipLoss", seeds: [0, 1, 2]}

``snakemake --config group=alice`` adds them to the config as ``alice/cyclip``, so their runs
land in ``results/<track>/<dataset>/alice/cyclip/seed<k>/``, and no group's name can clash
with another's or with the shared experiments. ``group=alice,bob`` adds both groups, so one
report compares them with the baselines.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from workflow.common.config import SCHEMA, ConfigError, load_schema
from workflow.common.errors import InputError

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
FOLDER = Path("groups")


def group_names(value: str | Iterable[str] | None) -> list[str]:
    """The groups ``--config group=...`` names: one, a comma-separated list, or a list."""
    if not value:
        return []
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in names]
    bad = [n for n in names if not NAME.match(n)]
    if bad:
        raise ConfigError(f"group {bad[0]!r}: a name of letters, digits, _ and -, "
                          "starting with a letter")  # fmt: skip
    return list(dict.fromkeys(names))


def group_file(name: str, root: str | Path = ".") -> Path:
    return Path(root) / FOLDER / f"{name}.yaml"


def read_group(name: str, tracks: Iterable[str], root: str | Path = ".") -> dict[str, dict]:
    """A group's experiments per track (checked against the track's schema), from its file."""
    path = group_file(name, root)
    try:
        content = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(path, f"no such file: group {name} has no experiments file") from None
    except (OSError, yaml.YAMLError) as err:
        raise InputError(path, f"not a readable YAML file: {err}") from None
    if not isinstance(content, Mapping) or not content:
        raise InputError(path, "expected <track>: {experiments: {<name>: {settings}}}")
    schema = load_schema(SCHEMA)
    out: dict[str, dict] = {}
    for track, section in content.items():
        if track not in tracks:
            raise InputError(path, f"{track}: not an enabled track ({', '.join(tracks)})")
        if not isinstance(section, Mapping) or set(section) != {"experiments"}:
            raise InputError(path, f"{track}: a group sets experiments only (the data "
                             "preparation and training defaults are shared)")  # fmt: skip
        experiments = section["experiments"] or {}
        for experiment, settings in experiments.items():
            where = f"{track}.experiments.{experiment}"
            if not isinstance(experiment, str) or not NAME.match(experiment):
                raise InputError(path, f"{where}: not a name")
            definition = f"{track}_train"
            ref = {"$ref": f"{schema.homes[definition]}#/$defs/{definition}"}
            problems = schema.problems(copy.deepcopy(settings or {}), ref)
            if problems:
                raise InputError(path, f"{where}: {problems[0]}")
        out[track] = dict(experiments)
    return out


def with_groups(config: dict[str, Any], names: Iterable[str], root: str | Path = ".") -> dict:
    """``config`` with each group's experiments added as ``<group>/<experiment>``, in place;
    returns them per track."""
    added: dict[str, list[str]] = {}
    for name in names:
        for track, experiments in read_group(name, config["tracks"], root).items():
            for experiment, settings in experiments.items():
                qualified = f"{name}/{experiment}"
                config[track]["experiments"][qualified] = copy.deepcopy(settings or {})
                added.setdefault(track, []).append(qualified)
    return added


def report_folder(names: Iterable[str]) -> str:
    """Where a run's report goes: the shared one, or one per set of groups."""
    names = list(names)
    return "results/report" if not names else f"results/report/{'+'.join(names)}"
