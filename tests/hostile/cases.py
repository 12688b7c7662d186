"""The catalogue: every stage that reads a kind of hostile input, with that input.

Each case copies a valid base (tests/hostile/bases.py), damages it in one way and says what
the stage must do: ``error`` (exit 2, one ``error: <path>: ...`` line, no output left),
``skip`` (the damaged sample counted and listed, the rest written) or ``ok`` (a hostile-looking
but valid input, read as it is). The kinds are the issue's: bomb, truncated, traversal, OOV
ids, duplicates, NaN labels, leak, injection path, and pickle (a checkpoint carrying code).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from tests.conftest import INDEX_SETTINGS, malicious_checkpoint
from tests.hostile.damage import INJECTION, png_bomb, truncate
from tests.hostile.run import Case, count_rows

CASES: list[Case] = []
SPLITS = ("train", "val", "test")


def case(stage: str, kind: str, expect: str, skips: Callable[[Path], int] | None = None,
         name: str = ""):  # fmt: skip
    """Register the decorated builder as a case."""

    def register(build: Callable) -> Callable:
        CASES.append(Case(stage, kind, expect, build, skips, name))
        return build

    return register


def evil(folder: Path) -> Path:
    return malicious_checkpoint(folder / "evil.ckpt", folder / "RAN")


def evaluate_evil(track: str, tmp: Path, *inputs, outputs: tuple = ()) -> list:
    """The track's evaluate stage on a pickle-carrying checkpoint (its other inputs valid)."""
    out = tmp / "out"
    return [f"scripts/{track}.py", "evaluate", "--checkpoint", evil(tmp), *inputs,
            "--metrics", out / "metrics.json", "--predictions", out / "p.parquet",
            *(a for flag, name in outputs for a in (flag, out / name)),
            "--dataset", "d", "--experiment", "e"]  # fmt: skip


# ------------------------------------------------------------------------------- distance
def distance_index(root: Path, out: Path) -> list:
    outputs = [a for s in SPLITS for a in (f"--{s}", out / f"{s}.parquet")]
    return ["scripts/distance.py", "index", "--root", root, *outputs, "--skipped",
            out / "skipped.tsv", "--settings", json.dumps(INDEX_SETTINGS),
            "--on-bad-sample", "skip"]  # fmt: skip


def distance_extract(bases, tmp: Path, damage: Callable[[Path], None]) -> list:
    root = bases.copy("motsynth", tmp / "motsynth")
    table = bases.distance_test_store.with_name("test.parquet")
    damage(root / pd.read_parquet(table)["file_name"].iloc[0])
    out = tmp / "out"
    return ["scripts/distance.py", "extract", "--index", table, "--root", root,
            "--out", out / "test.h5", "--skipped", out / "test.skipped.tsv",
            "--frame-size", "64", "112", "--crop-size", "32", "16",
            "--on-bad-sample", "skip"]  # fmt: skip


@case("distance index", "truncated", "error")
def _(bases, tmp):
    root = bases.copy("motsynth", tmp / "motsynth")
    truncate(root / "annotations" / "001.json")
    return distance_index(root, tmp / "out")


def edit_annotation(root: Path, change: Callable[[dict], None], name: str = "001") -> Path:
    path = root / "annotations" / f"{name}.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))  # NaN is written as JSON's NaN token, as json.dump does
    return path


def distance_damaged(bases, tmp: Path, change: Callable[[dict], None]) -> list:
    root = bases.copy("motsynth", tmp / "motsynth")
    edit_annotation(root, change)
    return distance_index(root, tmp / "out")


@case("distance index", "duplicates", "skip", count_rows("out", "skipped.tsv"))
def _(bases, tmp):
    return distance_damaged(bases, tmp, lambda d: d["annotations"].append(d["annotations"][0]))


@case("distance index", "NaN labels", "skip", count_rows("out", "skipped.tsv"))
def _(bases, tmp):
    return distance_damaged(
        bases, tmp, lambda d: d["annotations"][0]["keypoints_3d"].__setitem__(2, float("nan"))
    )


@case("distance index", "traversal", "skip", count_rows("out", "skipped.tsv"))
def _(bases, tmp):
    return distance_damaged(
        bases, tmp, lambda d: d["images"][0].__setitem__("file_name", "../../../etc/hosts")
    )


@case("distance index", "leak", "error")
def _(bases, tmp):
    root = bases.copy("motsynth", tmp / "motsynth")
    copy = root / "annotations" / "101.json"  # another file claiming sequence 001
    copy.write_text((root / "annotations" / "001.json").read_text())
    return distance_index(root, tmp / "out")


@case("distance index", "injection path", "ok")
def _(bases, tmp):
    return distance_index(bases.copy("motsynth", tmp / INJECTION), tmp / "out")


@case("distance extract", "bomb", "skip", count_rows("out", "test.skipped.tsv"))
def _(bases, tmp):
    return distance_extract(bases, tmp, lambda frame: frame.write_bytes(png_bomb()))


@case("distance extract", "truncated", "skip", count_rows("out", "test.skipped.tsv"))
def _(bases, tmp):
    return distance_extract(bases, tmp, truncate)


@case("distance evaluate", "pickle", "error")
def _(bases, tmp):
    return evaluate_evil("distance", tmp, "--test-store", bases.distance_test_store,
                         "--settings", '{"model": "disnet"}')  # fmt: skip


# ------------------------------------------------------------------------------------ wsi
def wsi_segment(root: Path, out: Path, labels: Path | None = None) -> list:
    return ["scripts/wsi.py", "segment", "--slides", root / "slides", "--labels",
            labels or root / "labels.csv", "--index", out / "index.tsv", "--skipped",
            out / "skipped.tsv", "--settings", '{"target_mpp": 8.0}',
            "--on-bad-sample", "skip"]  # fmt: skip


def edit_labels(root: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    path = root / "labels.csv"
    change(pd.read_csv(path, dtype=str)).to_csv(path, index=False)
    return path


@case("wsi segment", "truncated", "skip", count_rows("out", "skipped.tsv"))
def _(bases, tmp):
    root = bases.copy("wsi", tmp / "camelyon16")
    truncate(sorted((root / "slides").glob("*.tif"))[0])
    return wsi_segment(root, tmp / "out")


@case("wsi segment", "duplicates", "error")
def _(bases, tmp):
    root = bases.copy("wsi", tmp / "camelyon16")
    edit_labels(root, lambda t: pd.concat([t, t.iloc[:1]]))
    return wsi_segment(root, tmp / "out")


@case("wsi segment", "NaN labels", "error")
def _(bases, tmp):
    root = bases.copy("wsi", tmp / "camelyon16")
    edit_labels(root, lambda t: t.assign(label=["nan", *t["label"][1:]]))
    return wsi_segment(root, tmp / "out")


@case("wsi segment", "traversal", "error", name="path column")
def _(bases, tmp):
    root = bases.copy("wsi", tmp / "camelyon16")
    outside = sorted((root / "slides").glob("*.tif"))[0].rename(tmp / "outside.tif")
    edit_labels(root, lambda t: t.assign(path=[f"../../{outside.name}", *[""] * (len(t) - 1)]))
    return wsi_segment(root, tmp / "out")


@case("wsi segment", "traversal", "error", name="slide id")
def _(bases, tmp):
    root = bases.copy("wsi", tmp / "camelyon16")
    first = sorted((root / "slides").glob("*.tif"))[0]
    edit_labels(root, lambda t: t.assign(
        slide_id=t["slide_id"].where(t["slide_id"] != first.stem, "../../escaped"),
        path=[first.name if s == first.stem else "" for s in t["slide_id"]],
    ))  # fmt: skip
    return wsi_segment(root, tmp / "out")


@case("wsi segment", "injection path", "ok")
def _(bases, tmp):
    root = bases.copy("wsi", tmp / INJECTION)
    return wsi_segment(root, tmp / "out")


@case("wsi evaluate", "pickle", "error")
def _(bases, tmp):
    return evaluate_evil("wsi", tmp, "--graphs", bases.wsi_graphs, "--settings", "{}",
                         outputs=[("--attention", "attention.h5")])  # fmt: skip


# ------------------------------------------------------------------------------- sequence
def sequence_encode(root: Path, out: Path) -> list:
    from tests.sequence.conftest import ENCODE, demo_inputs

    inputs = [a for key, path in demo_inputs(root).items() for a in (f"--{key}", path)]
    return ["scripts/sequence.py", "encode", *inputs, "--out", out, "--skipped",
            out / "skipped.tsv", "--settings", json.dumps(ENCODE),
            "--on-bad-sample", "skip"]  # fmt: skip


def edit_table(path: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    change(pd.read_csv(path, sep="\t", dtype=str)).to_csv(path, sep="\t", index=False)


@case("sequence encode", "NaN labels", "skip", count_rows("out", "skipped.tsv"))
def _(bases, tmp):
    root = bases.copy("sequence", tmp / "sequence")
    edit_table(
        root / "expression.tsv", lambda t: t.assign(**{t.columns[1]: ["NaN", *t.iloc[1:, 1]]})
    )
    return sequence_encode(root, tmp / "out")


@case("sequence encode", "duplicates", "error")
def _(bases, tmp):
    root = bases.copy("sequence", tmp / "sequence")
    edit_table(root / "tss.tsv", lambda t: pd.concat([t, t.iloc[:1]]))
    return sequence_encode(root, tmp / "out")


@case("sequence encode", "leak", "error")
def _(bases, tmp):
    import h5py
    import numpy as np

    from tests.sequence.test_sequence_encode import write_xpresso

    write_xpresso(tmp / "xpresso", sizes=(3, 2, 2), length=200)
    with h5py.File(tmp / "xpresso" / "test.h5", "a") as h5:  # a training gene in the test set
        del h5["geneName"]
        h5["geneName"] = np.array([b"ENSGtrain00001", b"ENSGtest00001"])
    return ["scripts/sequence.py", "encode", "--xpresso", tmp / "xpresso", "--out",
            tmp / "out", "--skipped", tmp / "out" / "skipped.tsv",
            "--on-bad-sample", "skip"]  # fmt: skip


@case("sequence evaluate", "pickle", "error")
def _(bases, tmp):
    return evaluate_evil("sequence", tmp, "--encoded", bases.sequence_encoded,
                         "--settings", '{"task": "mrna"}')  # fmt: skip


# ----------------------------------------------------------------------------------- nerf
def nerf_prepare(root: Path, out: Path) -> list:
    return ["scripts/nerf.py", "prepare", "--format", "nerfstudio", "--root", root,
            "--out", out / "transforms.json", "--settings", "{}"]  # fmt: skip


def first_view(root: Path) -> Path:
    return sorted((root / "images").iterdir())[0]


@case("nerf prepare", "bomb", "error")
def _(bases, tmp):
    root = bases.copy("nerf", tmp / "scene")
    first_view(root).write_bytes(png_bomb())
    return nerf_prepare(root, tmp / "out")


@case("nerf prepare", "truncated", "error")
def _(bases, tmp):
    root = bases.copy("nerf", tmp / "scene")
    truncate(first_view(root))
    return nerf_prepare(root, tmp / "out")


@case("nerf prepare", "traversal", "error")
def _(bases, tmp):
    root = bases.copy("nerf", tmp / "scene")
    meta = json.loads((root / "transforms.json").read_text())
    image = root / meta["frames"][0]["file_path"]
    image.rename(tmp / "outside.png")
    meta["frames"][0]["file_path"] = "../outside.png"
    (root / "transforms.json").write_text(json.dumps(meta))
    return nerf_prepare(root, tmp / "out")


@case("nerf prepare", "injection path", "ok")
def _(bases, tmp):
    return nerf_prepare(bases.copy("nerf", tmp / INJECTION), tmp / "out")


@case("nerf evaluate", "pickle", "error")
def _(bases, tmp):
    return evaluate_evil("nerf", tmp, "--scene", bases.nerf_scene, "--settings", "{}",
                         outputs=[("--renders", "renders.png")])  # fmt: skip


# ----------------------------------------------------------------------------------- flip
def flip_dropped(folder: Path) -> int:
    """Samples the filter dropped and counted (counts.json; the base shard drops none)."""
    path = folder / "out" / "filtered" / "counts.json"
    if not path.is_file():
        return 0
    return sum(json.loads(path.read_text())["dropped"].values())


def flip_shard(tmp: Path, bad: dict | None = None, key: str = "000000001") -> Path:
    """A shard of three good samples, the middle one changed by ``bad`` or named ``key``."""
    from tests.flip.conftest import sample, write_tar

    _, middle = sample("000000001", **(bad or {}))
    samples = [sample("000000000"), (key, middle), sample("000000002")]
    return write_tar(tmp / "shards" / "00000.tar", samples)


def flip_filter(*shards: Path, out: Path) -> list:
    return ["scripts/flip.py", "filter", "--shards", *shards, "--settings", "{}",
            "--out", out / "filtered", "--on-bad-sample", "skip"]  # fmt: skip


@case("flip filter", "bomb", "skip", flip_dropped)
def _(bases, tmp):
    return flip_filter(flip_shard(tmp, {"jpg": png_bomb()}), out=tmp / "out")


@case("flip filter", "truncated", "error")
def _(bases, tmp):
    return flip_filter(truncate(flip_shard(tmp), 0.4), out=tmp / "out")  # inside a member


@case("flip filter", "truncated", "error", name="re-terminated")
def _(bases, tmp):
    """Cut after the first sample and closed again: a valid tar, short of its stats."""
    import tarfile

    shard = flip_shard(tmp)
    members = tarfile.open(shard).getmembers()
    with tarfile.open(shard) as tar, tarfile.open(tmp / "cut.tar", "w") as cut:
        for member in members[:3]:
            cut.addfile(member, tar.extractfile(member))
    (tmp / "cut.tar").replace(shard)
    (shard.parent / "00000_stats.json").write_text(json.dumps({"successes": 3, "count": 3}))
    return flip_filter(shard, out=tmp / "out")


@case("flip filter", "duplicates", "skip", flip_dropped)
def _(bases, tmp):
    return flip_filter(flip_shard(tmp, key="000000000"), out=tmp / "out")


@case("flip filter", "NaN labels", "skip", flip_dropped)
def _(bases, tmp):
    meta = {"key": "000000001", "NSFW": "UNLIKELY", "similarity": float("nan"), "caption": "x"}
    return flip_filter(flip_shard(tmp, {"json": json.dumps(meta).encode()}), out=tmp / "out")


@case("flip filter", "traversal", "skip", flip_dropped)
def _(bases, tmp):
    return flip_filter(flip_shard(tmp, key="../../000000009"), out=tmp / "out")


@case("flip filter", "injection path", "ok")
def _(bases, tmp):
    return flip_filter(flip_shard(tmp / INJECTION), out=tmp / "out")


@case("flip hash", "truncated", "error")
def _(bases, tmp):
    out = tmp / "out"
    return ["scripts/flip.py", "hash", "--shards", truncate(flip_shard(tmp), 0.4),
            "--settings", "{}", "--out", out / "group0.parquet"]  # fmt: skip


@case("flip evaluate", "pickle", "error")
def _(bases, tmp):
    return evaluate_evil("flip", tmp, "--pretrained", evil(tmp), "--val", bases.flip,
                         "--settings", "{}",
                         outputs=[("--skipped", "val.skipped.tsv")])  # fmt: skip


# ------------------------------------------------------------------------------ watermark
def watermark_detect(bases, tmp: Path, change: Callable[[list[str]], list[str]]) -> list:
    from tests.watermark.test_watermark_cli import DETECT, GENERATE

    wm = bases.watermark
    generations = tmp / "generations.jsonl"
    generations.write_text("\n".join(change(wm["generations"].read_text().splitlines())) + "\n")
    (tmp / "attacked.jsonl").write_text("")  # no attack configured
    return ["scripts/watermark.py", "detect", "--generations", generations, "--attacked",
            tmp / "attacked.jsonl", "--model", wm["model"], "--settings", json.dumps(GENERATE),
            "--detect", json.dumps(DETECT), "--out", tmp / "out" / "scores.parquet"]  # fmt: skip


def with_ids(lines: list[str], key: str, ids: list) -> list[str]:
    record = json.loads(lines[0])
    record[key] = ids
    return [json.dumps(record), *lines[1:]]


@case("watermark detect", "OOV ids", "error", name="too large")
def _(bases, tmp):
    return watermark_detect(bases, tmp, lambda lines: with_ids(lines, "human_ids", [999999999]))


@case("watermark detect", "OOV ids", "error", name="negative")
def _(bases, tmp):
    return watermark_detect(bases, tmp, lambda lines: with_ids(lines, "marked_ids", [5, -5]))


@case("watermark detect", "OOV ids", "error", name="strings")
def _(bases, tmp):
    return watermark_detect(bases, tmp, lambda lines: with_ids(lines, "plain_ids", ["12", "x"]))


@case("watermark detect", "duplicates", "error")
def _(bases, tmp):
    return watermark_detect(bases, tmp, lambda lines: [x for x in lines for _ in (0, 1)])


@case("watermark detect", "truncated", "error")
def _(bases, tmp):
    return watermark_detect(
        bases, tmp, lambda lines: [*lines[:-1], lines[-1][: len(lines[-1]) // 2]]
    )


def watermark_text(bases, text: Path) -> list:
    """Text-in detection of one file, as a user runs it."""
    from tests.watermark.test_watermark_cli import DETECT, GENERATE

    return ["scripts/watermark.py", "detect", "--text", text, "--model",
            bases.watermark["model"], "--settings", json.dumps(GENERATE),
            "--detect", json.dumps(DETECT)]  # fmt: skip


@case("watermark detect --text", "missing", "error")
def _(bases, tmp):
    return watermark_text(bases, tmp / "no_such_text.txt")


@case("watermark detect --text", "not UTF-8", "error")
def _(bases, tmp):
    (tmp / "latin1.txt").write_bytes("caf\xe9 au lait, ".encode("latin-1") * 20)
    return watermark_text(bases, tmp / "latin1.txt")


@case("watermark detect --text", "empty", "error")
def _(bases, tmp):
    (tmp / "empty.txt").write_text("")
    return watermark_text(bases, tmp / "empty.txt")


def watermark_prompts(bases, documents: Path, tmp: Path) -> list:
    from tests.watermark.test_watermark_cli import PROMPTS

    out = tmp / "out"
    return ["scripts/watermark.py", "prompts", "--documents", documents, "--model",
            bases.watermark["model"], "--settings", json.dumps(PROMPTS),
            "--out", out / "prompts.jsonl", "--counts", out / "counts.json",
            "--skipped", out / "skipped.tsv", "--on-bad-sample", "skip"]  # fmt: skip


@case("watermark prompts", "truncated", "error")
def _(bases, tmp):
    import shutil

    documents = tmp / "docs.json.gz"
    shutil.copy(bases.watermark["documents"], documents)
    return watermark_prompts(bases, truncate(documents, 0.7), tmp)


@case("watermark prompts", "injection path", "ok")
def _(bases, tmp):
    import shutil

    documents = tmp / INJECTION / "docs.json.gz"
    documents.parent.mkdir()
    shutil.copy(bases.watermark["documents"], documents)
    return watermark_prompts(bases, documents, tmp)
