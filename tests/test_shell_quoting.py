"""Config paths reach the shell quoted: a path with spaces, quotes or ``$(...)`` is one
argument, never a command. Checked on every rule's shell text, then for real by Snakemake
on datasets that live under such a path."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.conftest import ROOT, copy_repo, snakemake_in
from workflow.common.target import RunTarget

#: Placeholders that are not data: the launch prefix and numbers from the profile.
UNQUOTED = re.compile(r"params\.launch|resources\.\w+|threads")
#: The folder every dataset of the run test lives in.
HOSTILE = "my data $(touch INJECTED) `touch INJECTED2` it's"


def shell_commands(path: Path) -> list[str]:
    """The string literals of each ``shell:`` block of a rules file, joined per rule."""
    commands, current = [], None
    for line in path.read_text().splitlines():
        text = line.strip()
        if text == "shell:":
            current = []
            commands.append(current)
        elif current is not None and text.startswith('"'):
            current.append(text)
        else:
            current = None
    return [" ".join(c) for c in commands]


def test_every_shell_placeholder_is_quoted():
    unquoted = []
    for path in sorted((ROOT / "rules").glob("*.smk")):
        commands = shell_commands(path)
        assert commands or path.name == "common.smk", path
        for command in commands:
            for field in re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", command):
                if not field.endswith(":q") and not UNQUOTED.fullmatch(field):
                    unquoted.append(f"{path.name}: {{{field}}}")
    assert unquoted == []


def test_rules_run_on_datasets_under_a_hostile_path(tmp_path):
    """distance index/extract, flip hash/dedup/filter and watermark prompts, with every
    dataset, model and document path under ``HOSTILE``: the jobs succeed and nothing runs."""
    from workflow.distance.demo import DemoSettings, write_demo
    from workflow.flip.demo import DemoSettings as FlipDemo
    from workflow.flip.demo import write_demo as write_flip
    from workflow.watermark.corpus import documents
    from workflow.watermark.demo import write_demo as write_documents
    from workflow.watermark.lm import train_lm

    data = tmp_path / HOSTILE
    write_demo(data / "motsynth", DemoSettings(sequences=5, frames_per_sequence=3, seed=3))
    write_flip(data / "laion", FlipDemo(shards=2, samples_per_shard=40, val_per_class=2))
    write_documents(data / "c4", {"documents": 12, "short_documents": 2, "bad_lines": 1, "seed": 1})
    tiny = {"vocab_size": 300, "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64,
            "batch_size": 8, "max_epochs": 1}  # fmt: skip
    train_lm(documents(20, seed=2), tiny, RunTarget(data / "lm.run", data / "lm model"))
    (tmp_path / "work").mkdir()
    workdir = copy_repo(tmp_path / "work")
    overlay = {
        "tracks": ["distance", "flip", "watermark"],
        "distance": {"datasets": {"hostile": {"root": str(data / "motsynth")}}},
        "flip": {
            "datasets": {
                "hostile": {
                    "shards": f"{data}/laion/shards/{{00000..00001}}.tar",
                    "val": str(data / "laion"),
                }
            },
            "filter": {"shards_per_group": 2},
        },  # fmt: skip
        "watermark": {
            "datasets": {
                "hostile": {
                    "documents": [str(data / "c4" / "c4-validation.00000-of-00001.json.gz")]
                }
            },
            "models": {"tiny": {"path": str(data / "lm model")}},
            "prompts": {"n": 4, "completion_tokens": 8, "max_prompt_tokens": 40},
        },  # fmt: skip
    }
    (workdir / "hostile.yaml").write_text(yaml.safe_dump(overlay))
    targets = [
        "results/distance/hostile/prep/store/test.h5",
        "results/flip/hostile/filtered/group0",
        "results/watermark/hostile/prompts/tiny.jsonl",
    ]
    snakemake_in(workdir, "hostile.yaml", "--cores", "2", *targets)
    for target in targets:
        assert (workdir / target).exists(), target
    injected = [p for p in (*tmp_path.rglob("INJECTED*"), *ROOT.glob("INJECTED*"))]
    assert injected == []
