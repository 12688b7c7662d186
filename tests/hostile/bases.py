"""Valid inputs of every track, small and built once; each hostile case copies one and
damages the copy in one way, so whatever a stage reports is that damage's doing."""

from __future__ import annotations

import functools
import importlib
import json
import shutil
from pathlib import Path

from tests.conftest import INDEX_SETTINGS
from workflow.common.target import RunTarget


class Bases:
    """Each property builds its base on first use, under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def copy(self, name: str, dest: Path) -> Path:
        """A fresh copy of base ``name`` (a folder) at ``dest``."""
        shutil.copytree(getattr(self, name), dest)
        return dest

    @functools.cached_property
    def motsynth(self) -> Path:
        from workflow.distance.demo import DemoSettings, write_demo

        root = self.root / "motsynth"
        write_demo(root, DemoSettings(sequences=5, frames_per_sequence=3, seed=3))
        return root

    @functools.cached_property
    def distance_test_store(self) -> Path:
        """The test split's HDF5 store of :attr:`motsynth` (what distance evaluate reads)."""
        from workflow.distance.index import build_index
        from workflow.distance.store import extract_split

        out = self.root / "distance_prep"
        tables = {s: out / f"{s}.parquet" for s in ("train", "val", "test")}
        build_index(self.motsynth, tables, out / "skipped.tsv", INDEX_SETTINGS, "fail")
        store = out / "test.h5"
        extract_split(tables["test"], self.motsynth, store, out / "x.tsv", (64, 112), (32, 16),
                      "fail")  # fmt: skip
        return store

    def _demo(self, track: str) -> Path:
        """The track's demo dataset at its tests' ``SMALL`` settings."""
        small = importlib.import_module(f"tests.{track}.conftest").SMALL
        importlib.import_module(f"workflow.{track}.demo").write_demo(self.root / track, small)
        return self.root / track

    @functools.cached_property
    def wsi(self) -> Path:
        return self._demo("wsi")

    @functools.cached_property
    def wsi_graphs(self) -> Path:
        """A graph stage index.tsv of two synthetic test-split slides (what evaluate reads)."""
        import pandas as pd

        from tests.wsi.conftest import synthetic_slide_graph
        from workflow.wsi.graph import save_graph

        out = self.root / "wsi_graphs"
        rows = []
        for i in range(2):
            path = out / f"s{i}.pt"
            save_graph(synthetic_slide_graph(i, i, f"s{i}"), path)
            rows.append({"slide_id": f"s{i}", "label": i, "split": "test", "graph": str(path)})
        pd.DataFrame(rows).to_csv(out / "index.tsv", sep="\t", index=False)
        return out / "index.tsv"

    @functools.cached_property
    def sequence(self) -> Path:
        return self._demo("sequence")

    @functools.cached_property
    def sequence_encoded(self) -> Path:
        from tests.sequence.conftest import ENCODE, demo_inputs
        from workflow.sequence.encode import encode_dataset

        out = self.root / "sequence_encoded"
        encode_dataset(**demo_inputs(self.sequence), out_dir=out, skipped=out / "skipped.tsv",
                       settings=ENCODE, policy="fail")  # fmt: skip
        return out

    @functools.cached_property
    def nerf(self) -> Path:
        from tests.nerf.conftest import demo_scene

        return demo_scene(self.root / "nerf")

    @functools.cached_property
    def nerf_scene(self) -> Path:
        """The prepared transforms.json of :attr:`nerf` (what train and evaluate read)."""
        from workflow.common.config import stage_settings
        from workflow.nerf.prepare import prepare

        out = self.root / "nerf_prepared" / "transforms.json"
        prepare("nerfstudio", self.nerf, out, stage_settings({}, "nerf_prepare"))
        return out

    @functools.cached_property
    def flip(self) -> Path:
        return self._demo("flip")

    @functools.cached_property
    def watermark(self) -> dict[str, Path]:
        """A tiny LM's folder, C4-style documents, and the prompts and generations the CLI
        makes of them (what detect reads)."""
        from tests.hostile.run import run
        from tests.watermark.test_watermark_cli import GENERATE, PROMPTS
        from workflow.watermark.corpus import c4_records, documents
        from workflow.watermark.lm import train_lm
        from workflow.watermark.records import write_records

        root = self.root / "watermark"
        tiny = {"vocab_size": 300, "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64,
                "batch_size": 8, "max_epochs": 1}  # fmt: skip
        train_lm(documents(20, seed=2), tiny, RunTarget(root / "lm.run", root / "model"))
        paths = {"model": root / "model", "documents": root / "c4" / "docs.json.gz",
                 "prompts": root / "prompts.jsonl", "generations": root / "generations.jsonl",
                 "info": root / "generation.json"}  # fmt: skip
        write_records(paths["documents"], c4_records(documents(8, seed=11), seed=11))
        for args in (
            ["prompts", "--documents", paths["documents"], "--model", paths["model"],
             "--settings", json.dumps(PROMPTS), "--out", paths["prompts"]],
            ["generate", "--prompts", paths["prompts"], "--model", paths["model"],
             "--settings", json.dumps(GENERATE), "--out", paths["generations"],
             "--info", paths["info"]],
        ):  # fmt: skip
            status, stderr, tb = run(["scripts/watermark.py", *args])
            assert status == 0, stderr[-2000:] + tb
        return paths
