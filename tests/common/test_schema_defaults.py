"""The schema is the one source of every default: a literal default in the library under the
name of one of its track's settings must be that setting's default in config/schema/.

Read from the source (no imports), so a default in any function, dataclass field, ``*DEFAULTS*``
or ``*SETTINGS*`` table or ``.get("key", default)`` is seen: ``def predict(..., batch_size=8)``
in workflow/distance beside a schema default of 64 fails, unless the parameter is listed in
``NOT_SETTINGS`` with why it is another thing.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "config" / "schema"
TRACKS = ("distance", "wsi", "sequence", "flip", "watermark", "nerf")
UNSET = object()

#: "module:owner.name" -> why this default is not the schema setting of the same name.
NOT_SETTINGS: dict[str, str] = {
    "workflow/distance/evaluate.py:predict.batch_size": "inference batch, not a training one",
    "workflow/distance/models.py:ZhuFang.__init__.model": "the class's own model name",
    "workflow/distance/motsynth.py:read_sequence.frame_stride": "one split's stride; the "
    "schema's is a per-split table",
    "workflow/distance/sizes.py:train_size.root": "the working directory of relative paths",
    "workflow/distance/sizes.py:schedules.root": "the working directory of relative paths",
    "workflow/distance/sizes.py:capacity_jobs.root": "the working directory of relative paths",
    "workflow/flip/shard_stream.py:shard_pipeline.shuffle": "a val pipeline is not shuffled; the "
    "train module passes the setting",
    "workflow/flip/evaluate.py:evaluate_run.zeroshot": "None - the dataset has no zeroshot section",
    "workflow/flip/layout.py:sample_key.samples_per_shard": "img2dataset's key layout of the "
    "real shards, not the demo's shard size",
    "workflow/flip/zeroshot.py:zero_shot_classifier.templates": "the templates themselves; the "
    "setting names a set of them",
    "workflow/flip/zeroshot.py:linear_probe.weight_decay": "the probe's L2 strength, not "
    "pre-training's AdamW decay",
    "workflow/nerf/transforms.py:Scene.train": "a scene's training views, not the train section",
    "workflow/sequence/evaluate.py:predict_genes.batch_size": "inference batch, not a training one",
    "workflow/watermark/prompts.py:PromptCounts.documents": "a counter that starts at 0",
    "workflow/watermark/evaluate.py:read_texts.batch_size": "the oracle's reading batch, not "
    "generation's; None - by device",
    "workflow/wsi/demo.py:DESIGN[tile]": "the TIFF's tile size, not the tile section",
    "workflow/wsi/tiling.py:tile_file.segment": "None - the caller's segmentation section",
}


def schema_defaults(track: str) -> dict[str, list[Any]]:
    """Setting name -> its defaults in every definition of ``track``'s file and the root (the
    shared code in workflow/common: the root only)."""
    found: dict[str, list[Any]] = {}
    for name in ("config",) if track == "common" else ("config", track):
        for definition in yaml.safe_load((SCHEMA / f"{name}.yaml").read_text())["$defs"].values():
            for key, spec in definition.get("properties", {}).items():
                if "default" in spec:
                    found.setdefault(key, []).append(spec["default"])
    return found


def plain(value: Any) -> Any:
    """Tuples as lists, so ``(4, 8)`` in code equals ``[4, 8]`` in YAML."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def module_constants(tree: ast.Module) -> dict[str, Any]:
    constants = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and getattr(node, "value", None) is not None:
            try:
                constants[target.id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return constants


def literal(node: ast.expr, constants: dict[str, Any]) -> Any:
    """A default's value if it is a literal or a module constant; UNSET otherwise."""
    if isinstance(node, ast.Name):
        return constants.get(node.id, UNSET)
    try:
        return ast.literal_eval(node)
    except ValueError:
        return UNSET


def code_defaults(path: Path) -> list[tuple[str, str, ast.expr]]:
    """(where, name, default) of every parameter, class field, entry of a ``*DEFAULTS*`` or
    ``*SETTINGS*`` table (module or class), ``schema_dataclass`` constant and
    ``.get("name", default)``."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, owner: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = child.args
                positional = args.posonlyargs + args.args
                pairs = list(
                    zip(
                        positional[len(positional) - len(args.defaults) :],
                        args.defaults,
                        strict=True,
                    )
                )
                pairs += [
                    (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d
                ]
                where = f"{owner}{child.name}"
                found.extend((f"{where}.{a.arg}", a.arg, d) for a, d in pairs)
                visit(child, f"{where}.")
            elif isinstance(child, ast.ClassDef):
                for item in child.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        if item.value is not None:
                            name = item.target.id
                            found.append((f"{owner}{child.name}.{name}", name, item.value))
                visit(child, f"{owner}{child.name}.")
            elif isinstance(child, (ast.Assign, ast.AnnAssign)):
                target = child.targets[0] if isinstance(child, ast.Assign) else child.target
                table = isinstance(target, ast.Name) and (
                    "DEFAULTS" in target.id or "SETTINGS" in target.id
                )
                if table and isinstance(child.value, ast.Dict):
                    for key, entry in zip(child.value.keys, child.value.values, strict=True):
                        if isinstance(key, ast.Constant) and isinstance(key.value, str):
                            found.append((f"{owner}{target.id}[{key.value}]", key.value, entry))
                if isinstance(target, ast.Name) and isinstance(child.value, ast.Tuple):
                    # schema_dataclass's constants: ((name, type, default), ...)
                    for entry in child.value.elts:
                        if (
                            isinstance(entry, ast.Tuple)
                            and len(entry.elts) == 3
                            and isinstance(entry.elts[0], ast.Constant)
                            and isinstance(entry.elts[0].value, str)
                        ):
                            name = entry.elts[0].value
                            found.append((f"{owner}{target.id}[{name}]", name, entry.elts[2]))
        for call in ast.walk(node) if owner == "" else ():
            # settings.get("key", default): a default at the point of use
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "get"
                and len(call.args) == 2
                and isinstance(call.args[0], ast.Constant)
                and isinstance(call.args[0].value, str)
            ):
                found.append(
                    (f"get({call.args[0].value!r})@{call.lineno}", call.args[0].value, call.args[1])
                )

    visit(tree, "")
    return found


def disagreements(track: str, root: Path = ROOT) -> tuple[list[str], set[str]]:
    """Defaults that differ from the schema's, and the ``NOT_SETTINGS`` entries that excused one."""
    settings = schema_defaults(track)
    bad, excused = [], set()
    for path in sorted((root / "workflow" / track).glob("*.py")):
        constants = module_constants(ast.parse(path.read_text()))
        for where, name, node in code_defaults(path):
            if name not in settings:
                continue
            value = literal(node, constants)
            if value is UNSET or plain(value) in [plain(v) for v in settings[name]]:
                continue
            key = f"{path.relative_to(root)}:{where}"
            if key in NOT_SETTINGS:
                excused.add(key)
            else:
                bad.append(f"{key} = {value!r}, schema: {settings[name]}")
    return bad, excused


@pytest.mark.parametrize("track", ("common", *TRACKS))
def test_code_defaults_agree_with_the_schema(track):
    bad, _ = disagreements(track)
    assert not bad, "code and schema disagree:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("track", ("distance", "wsi", "sequence", "flip"))
def test_demo_settings_take_the_schema_defaults(track):
    """Each track's DemoSettings is built from ``$defs/<track>_demo`` (schema_dataclass): a
    bare one holds the config's demo section with nothing set (and WSI's fixed design)."""
    from workflow.common.config import stage_settings

    settings = importlib.import_module(f"workflow.{track}.demo").DemoSettings()
    fields = {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()
    }
    defaults = stage_settings({}, f"{track}_demo")
    assert {k: fields.get(k) for k in defaults} == defaults


def test_every_listed_exception_still_differs():
    """An entry whose code now agrees (or is gone) is removed, so the list stays true."""
    excused = set().union(*(disagreements(t)[1] for t in ("common", *TRACKS)))
    assert sorted(set(NOT_SETTINGS) - excused) == []


def test_the_scan_sees_a_disagreement(tmp_path):
    """The same scan on a file with a stray default (the way the sequence code once said
    warm-up 200 where the schema said 8000)."""
    module = tmp_path / "workflow" / "sequence"
    module.mkdir(parents=True)
    (module / "train.py").write_text(
        "WARMUP = 200\n"
        "DEFAULTS = {'warmup_steps': 200, 'loss': 'mse'}\n"
        "def fit(settings, warmup_steps=WARMUP, lr=1e-3): ...\n"
        "class Settings:\n    huber_delta: float = 2.0\n"
        "class Model:\n    SETTINGS = {'dim': 128}\n"
        "def steps(s):\n    return s.get('max_epochs', 99)\n"
        "DESIGN = (('lr', float, 0.5), ('not_a_setting', int, 1))\n"
    )
    bad, _ = disagreements("sequence", tmp_path)
    assert sorted(b.split(" = ")[0] for b in bad) == [
        "workflow/sequence/train.py:DEFAULTS[warmup_steps]",
        "workflow/sequence/train.py:DESIGN[lr]",
        "workflow/sequence/train.py:Model.SETTINGS[dim]",
        "workflow/sequence/train.py:Settings.huber_delta",
        "workflow/sequence/train.py:fit.warmup_steps",
        "workflow/sequence/train.py:get('max_epochs')@9",
    ]
