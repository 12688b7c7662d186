"""FLIP fixtures: one small demo dataset and its filtered shards, built once per session."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import demo_fixtures
from workflow.flip.demo import DemoSettings, jpeg, write_demo
from workflow.flip.filter import filter_shards
from workflow.flip.layout import list_shards

# 3 shards x 100 samples, 2 planted bad samples per reason, 16 classes x 3 val images:
# about a second to write and to filter.
SMALL = DemoSettings(shards=3, samples_per_shard=100, val_per_class=3, seed=3)
FILTER = {"shard_size": 70}


flip_demo, flip_manifest = demo_fixtures("flip", write_demo, SMALL)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures(...)``): with
    two cores shared with other jobs, one thread is several times faster than two."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def flip_filtered(flip_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("flip_filtered")
    counts = filter_shards(list_shards(flip_demo / "shards"), out, FILTER, "skip")
    return out, counts


def tar_samples(path: Path) -> list[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) per sample, in tar order, read with plain tarfile."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar:
            key, _, ext = m.name.partition(".")
            samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return list(samples.items())


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    """A shard of the given members, written with plain tarfile (sorted by extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, data in sorted(members.items()):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def sample(key: str = "000000001", **change: bytes | None) -> tuple[str, dict[str, bytes]]:
    """One good sample (64 x 64 JPEG, caption, metadata), members changed or (None) removed."""
    img = Image.new("RGB", (64, 64), (200, 30, 30))
    img.putpixel((int(key) % 64, 0), (0, 0, 0))  # distinct bytes per key
    meta = {"key": key, "NSFW": "UNLIKELY", "similarity": 0.35, "caption": "a red square"}
    members = {"jpg": jpeg(img, 90), "txt": b"a red square", "json": json.dumps(meta).encode()}
    for ext, data in change.items():
        if data is None:
            members.pop(ext)
        else:
            members[ext] = data
    return key, members
