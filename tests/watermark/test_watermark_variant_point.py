"""The watermark track's plug-in point (greenlist.SeedingScheme, setting ``scheme``): the worked
example (variants/watermark/skipgram.py) loads, seeds like the reference's skipgram_prf and
watermarks text the detector finds; the built-ins are SeedingSchemes too; a bad plug-in is an
error naming its file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from tests.watermark import reference
from workflow.common.config import ConfigError, stage_settings
from workflow.common.errors import InputError
from workflow.common.variants import load_variant
from workflow.watermark import detect, greenlist
from workflow.watermark.generate import processor
from workflow.watermark.processor import WatermarkLogitsProcessor

SPEC = "variants/watermark/skipgram.py:SkipGram"
VOCAB = 1000
KEY = 15485863


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # variant paths are relative to the working directory


def test_the_worked_example_loads_and_seeds_like_the_reference_skipgram():
    cls = load_variant("watermark", "scheme", SPEC)
    sch = greenlist.scheme(SPEC)
    assert type(sch) is cls and issubclass(cls, greenlist.SeedingScheme)
    assert (sch.name, sch.context_width, sch.self_salt, sch.lookback) == (SPEC, 5, False, 5)
    assert sch.reference_name() == "ff-skipgram_prf-5-False-15485863"
    assert greenlist.scheme(SPEC) is sch  # built once per process
    rng = np.random.default_rng(0)
    windows = torch.tensor(rng.integers(-(2**40), 2**40, (4, 3, 5)))
    seeds = greenlist.prf_seeds(windows, sch, KEY)
    assert seeds.shape == (4, 3) and seeds.dtype == torch.long
    # the reference: hashint(key * farthest id), key * id wrapping in int64
    expected = [[reference.hashint(reference.wrap_int64(KEY * int(w[0]))) for w in row]
                for row in windows]  # fmt: skip
    assert seeds.tolist() == expected
    # only the farthest id matters
    changed = windows.clone()
    changed[..., 1:] += 17
    assert torch.equal(greenlist.prf_seeds(changed, sch, KEY), seeds)


def test_the_worked_example_watermarks_what_the_detector_finds():
    sch = greenlist.scheme(SPEC)
    proc = WatermarkLogitsProcessor(VOCAB, 0.25, 50.0, SPEC)
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(0, VOCAB, (2, 8), generator=generator)
    for _ in range(60):  # flat logits + a large delta: every token is green
        scores = proc(ids, torch.zeros(2, VOCAB))
        assert scores.shape == (2, VOCAB)
        nxt = torch.multinomial(scores.softmax(-1), 1, generator=generator)
        ids = torch.cat([ids, nxt], dim=1)
    for row in ids.tolist():
        marked = detect.score(row, VOCAB, 0.25, SPEC, prefix_len=8)
        assert marked.tokens == 60 and marked.z > 10
        assert detect.score(row, VOCAB, 0.25, "lefthash", prefix_len=8).z < 4
        # per token: green under the seed of the id 5 back
        for t in range(8, len(row)):
            seed = reference.hashint(reference.wrap_int64(KEY * row[t - 5]))
            assert row[t] in reference.green_ids(seed, VOCAB, 0.25)
    # a prompt shorter than the context: scoring starts after the first w = 5 ids
    assert detect.green_flags(ids[0], VOCAB, 0.25, sch, prefix_len=3).shape == (68 - 5,)


@pytest.mark.parametrize("name", ["lefthash", "selfhash"])
def test_the_built_ins_are_seeding_schemes(name):
    sch = greenlist.scheme(name)
    assert isinstance(sch, greenlist.SeedingScheme) and sch.name == name
    windows = torch.tensor([[11, 222, 3333, 44444][-sch.context_width :]])
    seed = int(greenlist.prf_seeds(windows, sch, KEY)[0])
    context, token = (windows[0].tolist(), None) if name == "lefthash" else (
        windows[0, :-1].tolist(), int(windows[0, -1]))  # fmt: skip
    assert seed == reference.seed(context, token, name, KEY)


def write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "plugin.py"
    path.write_text("import torch\nfrom workflow.watermark.greenlist import SeedingScheme\n\n"
                    + body)  # fmt: skip
    return str(path)


def test_a_plugin_without_seeds_is_an_error_naming_its_file(tmp_path):
    path = write(tmp_path, "class NoSeeds(SeedingScheme):\n    context_width = 2\n")
    with pytest.raises(InputError, match="does not define seeds") as err:
        load_variant("watermark", "scheme", f"{path}:NoSeeds")
    assert str(err.value).startswith(path)
    with pytest.raises(InputError, match="does not define seeds"):
        greenlist.scheme(f"{path}:NoSeeds")


def test_a_plugin_that_cannot_be_built_or_seeds_badly_says_so(tmp_path):
    path = write(tmp_path, (
        "class Wide(SeedingScheme):\n    context_width = 'wide'\n\n"
        "    def seeds(self, windows, key):\n        return windows[..., 0]\n\n\n"
        "class Float(SeedingScheme):\n    def seeds(self, windows, key):\n"
        "        return windows[..., 0].float()\n"))  # fmt: skip
    with pytest.raises(InputError, match="cannot build Wide: .*context_width") as err:
        greenlist.scheme(f"{path}:Wide")
    assert str(err.value).startswith(path)
    with pytest.raises(ValueError, match="must return an int64 tensor"):
        detect.score([1, 2, 3, 4], VOCAB, 0.25, f"{path}:Float")


def test_the_schema_takes_a_variant_and_still_refuses_a_typo():
    settings = stage_settings({"scheme": SPEC}, "watermark_train")
    assert settings["scheme"] == SPEC
    assert stage_settings({}, "watermark_train")["scheme"] == "lefthash"  # today's default
    for typo in ("minhash", "skipgram.py", "variants/watermark/skipgram.py:"):
        with pytest.raises(ConfigError):
            stage_settings({"scheme": typo}, "watermark_train")


def test_generation_builds_the_plugin_from_the_settings():
    proc = processor({"gamma": 0.25, "delta": 2.0, "scheme": SPEC}, VOCAB)
    assert isinstance(proc.scheme, load_variant("watermark", "scheme", SPEC))
    assert "scheme='variants/watermark/skipgram.py:SkipGram'" in repr(proc)
