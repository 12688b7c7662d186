"""flip_evaluate's protocol: open_clip's templates and ImageNet names, a linear probe fit on the
train split with its L2 strength chosen on held-out train features, cached image features."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.zero_shot_metadata import (
    IMAGENET_CLASSNAMES,
    OPENAI_IMAGENET_TEMPLATES,
    SIMPLE_IMAGENET_TEMPLATES,
)

from tests.conftest import ROOT
from workflow.common.cli import run_cli
from workflow.common.config import stage_settings
from workflow.common.errors import InputError
from workflow.flip import evaluate as evaluate_module
from workflow.flip import zeroshot
from workflow.flip.demo import DemoSettings, write_demo
from workflow.flip.eval_data import encode_split, list_split
from workflow.flip.evaluate import EVALUATE_DEFAULTS, ZEROSHOT_DEFAULTS, evaluate_run
from workflow.flip.model import image_transforms
from workflow.flip.train import FlipModule, load_module
from workflow.flip.zeroshot import (
    TEMPLATES,
    Probe,
    imagenet_classnames,
    probe_split,
    sweep_l2,
    template_set,
    zero_shot_classifier,
)

# 16 classes x (3 val, 8 train) images, one small shard: a fraction of a second to write.
TINY = DemoSettings(
    shards=1, samples_per_shard=40, val_per_class=3, train_per_class=8, bad_per_reason=0, seed=5
)
CLASSES = len(TINY.colors) * len(TINY.shapes)
#: A short sweep: 4 strengths, 50 L-BFGS iterations each.
FAST = {"probe_l2_min": 1e-4, "probe_l2_max": 1.0, "probe_l2_steps": 4, "probe_max_iter": 50}
OWN = {"classnames": "file", "templates": "own"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flip_eval") / "demo"
    write_demo(root, TINY)
    return root


def save_checkpoint(path: Path, seed: int) -> Path:
    """A randomly initialised flip-tiny in final.ckpt's layout (the evaluation's input)."""
    torch.manual_seed(seed)
    module = FlipModule({"model": "flip-tiny"})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": {"settings": dict(module.settings)},
                "state_dict": module.state_dict()}, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("flip_ckpt") / "final.ckpt", seed=0)


@pytest.fixture
def forward_calls(monkeypatch) -> list[int]:
    """Batches through the image tower (open_clip's CLIP.encode_image), counted."""
    calls: list[int] = []
    original = CLIP.encode_image

    def counting(self, image, *args, **kwargs):
        calls.append(len(image))
        return original(self, image, *args, **kwargs)

    monkeypatch.setattr(CLIP, "encode_image", counting)
    return calls


def test_schema_defaults_are_the_modules():
    assert stage_settings({}, "flip_evaluate") == EVALUATE_DEFAULTS
    assert stage_settings({}, "flip_zeroshot") == ZEROSHOT_DEFAULTS


def test_template_sets_are_open_clips():
    assert list(template_set("openai")) == list(OPENAI_IMAGENET_TEMPLATES)
    assert len(template_set("openai")) == 80 and len(template_set("simple")) == 7
    assert list(template_set("simple")) == list(SIMPLE_IMAGENET_TEMPLATES)
    assert list(template_set("own")) == list(TEMPLATES)
    with pytest.raises(InputError, match="unknown set"):
        template_set("clip")


def test_openai_templates_build_the_classifier(demo, checkpoint, monkeypatch):
    """Configured ``openai``: every class is prompted with the 80 templates, averaged."""
    texts: list[str] = []
    real = evaluate_module.tokenizer

    def spying(settings):
        tokenize = real(settings)

        def encode(batch, *args, **kwargs):
            texts.extend(batch)
            return tokenize(batch, *args, **kwargs)

        return encode

    monkeypatch.setattr(evaluate_module, "tokenizer", spying)
    result = evaluate_run(checkpoint, demo, zeroshot={"templates": "openai"}, settings=FAST)
    assert result.extra["templates"] == 80 == len(OPENAI_IMAGENET_TEMPLATES)
    assert result.extra["template_set"] == "openai" and result.extra["classes"] == CLASSES
    names = (demo / "classnames.txt").read_text().split("\n")[:CLASSES]
    assert len(texts) == 80 * CLASSES
    assert texts[:80] == [t(names[0]) for t in OPENAI_IMAGENET_TEMPLATES]
    # the classifier's first column is the renormalised mean of those 80 prompt embeddings
    model = load_module(checkpoint).model
    with torch.no_grad():
        tokens = real({"model": "flip-tiny"})(texts[:80])
        mean = F.normalize(model.encode_text(tokens), dim=-1).mean(dim=0)
    classifier = zero_shot_classifier(model, real({"model": "flip-tiny"}), names,
                                      OPENAI_IMAGENET_TEMPLATES)  # fmt: skip
    assert torch.allclose(classifier[:, 0], F.normalize(mean, dim=0), atol=1e-5)


def train_features(checkpoint: Path, folder: Path, name: str = "train") -> torch.Tensor:
    module = load_module(checkpoint)
    _, transform = image_transforms(module.model)
    return encode_split(module.model, list_split(folder, name), transform, amp=False).features


def test_probe_is_fit_on_train_features_only(demo, checkpoint, monkeypatch):
    seen: dict[str, list[torch.Tensor]] = {"sweep": [], "fit": []}
    sweep, fit = evaluate_module.sweep_l2, evaluate_module.fit_probe

    def sweep_spy(features, labels, *args, **kwargs):
        seen["sweep"].append(features.clone())
        return sweep(features, labels, *args, **kwargs)

    def fit_spy(features, labels, *args, **kwargs):
        seen["fit"].append(features.clone())
        return fit(features, labels, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "sweep_l2", sweep_spy)
    monkeypatch.setattr(evaluate_module, "fit_probe", fit_spy)
    result = evaluate_run(checkpoint, demo, zeroshot=OWN, settings=FAST)
    train = train_features(checkpoint, demo / "train")
    val = train_features(checkpoint, demo / "val", "val")
    assert len(train) == CLASSES * TINY.train_per_class != len(val)
    assert [len(f) for f in seen["sweep"] + seen["fit"]] == [len(train), len(train)]
    assert torch.equal(seen["sweep"][0], train) and torch.equal(seen["fit"][0], train)
    assert result.extra["train_images"] == len(train)
    assert len(result.predictions) == len(val) == CLASSES * TINY.val_per_class


def test_probe_learns_the_train_labels_not_the_val_labels(demo, checkpoint, tmp_path):
    """Train folders relabelled to another colour's class: a probe fit on train predicts the
    wrong class on val (accuracy near 0); one fit on val would not care."""
    correct = evaluate_run(checkpoint, demo, zeroshot=OWN, settings=FAST)
    folders = sorted(p.name for p in (demo / "train").iterdir())
    shifted = tmp_path / "train"
    for k, folder in enumerate(folders):  # the class 4 on has another colour
        shutil.copytree(demo / "train" / folder, shifted / folders[(k + 4) % len(folders)])
    wrong = evaluate_run(checkpoint, demo, train_dir=shifted, zeroshot=OWN, settings=FAST)
    assert correct.metrics["probe_top1"] >= 3 / CLASSES, correct.metrics
    assert wrong.metrics["probe_top1"] < 1 / CLASSES, wrong.metrics
    assert wrong.metrics["zeroshot_top1"] == correct.metrics["zeroshot_top1"]


def test_train_classes_must_be_the_val_classes(demo, checkpoint, tmp_path):
    train = tmp_path / "train"
    for folder in sorted((demo / "train").iterdir())[:-1]:
        shutil.copytree(folder, train / folder.name)
    with pytest.raises(InputError, match=r"class folders differ .* missing \['yellow_triangle'\]"):
        evaluate_run(checkpoint, demo, train_dir=train, zeroshot=OWN, settings=FAST)
    with pytest.raises(InputError, match="train image folder not found"):
        evaluate_run(checkpoint, demo, train_dir=tmp_path / "none", zeroshot=OWN, settings=FAST)


def separable_with_noise(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes x 30: two informative dimensions and 60 of noise (weak L2 overfits it)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(30)
    centres = torch.randn(4, 2, generator=g) * 1.5
    signal = centres[labels] + torch.randn(120, 2, generator=g)
    return torch.cat([signal, torch.randn(120, 60, generator=g)], dim=1), labels


def test_sweep_fits_on_train_rows_and_chooses_on_the_held_out_rest(monkeypatch):
    features, labels = separable_with_noise()
    fit_idx, held_idx = probe_split(labels, 0.75, seed=3)
    fitted, scored = [], []
    fit, score = zeroshot.fit_probe, Probe.score

    def fit_spy(x, y, *args, **kwargs):
        fitted.append((x.clone(), y.clone()))
        return fit(x, y, *args, **kwargs)

    def score_spy(self, x, y):
        scored.append((x.clone(), y.clone()))
        return score(self, x, y)

    monkeypatch.setattr(zeroshot, "fit_probe", fit_spy)
    monkeypatch.setattr(Probe, "score", score_spy)
    grid = [1e-5, 1e-3, 1e-1, 10.0]
    sweep = sweep_l2(features, labels, grid, 4, holdout=0.25, seed=3, max_iter=100, device="cpu")
    assert len(fitted) == len(scored) == len(grid)
    for x, y in fitted:
        assert torch.equal(x, features[fit_idx]) and torch.equal(y, labels[fit_idx])
    for x, y in scored:
        assert torch.equal(x, features[held_idx]) and torch.equal(y, labels[held_idx])
    assert sweep.grid == grid and (sweep.fit_rows, sweep.held_out_rows) == (88, 32)
    best = max(range(len(grid)), key=lambda i: (sweep.accuracy[i], -sweep.loss[i]))
    assert sweep.chosen == grid[best]
    assert sweep.accuracy[-1] < max(sweep.accuracy)  # 10.0 flattens the probe: not chosen
    assert sweep.chosen != 10.0


def test_features_are_cached_and_recomputed_for_a_new_checkpoint(demo, tmp_path, forward_calls):
    checkpoint = save_checkpoint(tmp_path / "run" / "final.ckpt", seed=1)
    cache = tmp_path / "run" / "eval_cache"
    first = evaluate_run(checkpoint, demo, zeroshot=OWN, settings=FAST, cache_dir=cache)
    images = CLASSES * (TINY.val_per_class + TINY.train_per_class)
    assert sum(forward_calls) == images
    assert first.extra["feature_cache"] == {"val": False, "train": False}
    assert sorted(p.name.split(".")[0] for p in cache.glob("*.pt")) == ["train", "val"]

    forward_calls.clear()
    again = evaluate_run(checkpoint, demo, zeroshot={"templates": "simple"}, settings=FAST,
                         cache_dir=cache)  # fmt: skip
    assert forward_calls == [] and again.extra["feature_cache"] == {"val": True, "train": True}
    assert again.metrics["probe_top1"] == first.metrics["probe_top1"]
    assert again.predictions["image"].tolist() == first.predictions["image"].tolist()

    save_checkpoint(checkpoint, seed=2)  # retrained: same path, other weights
    third = evaluate_run(checkpoint, demo, zeroshot=OWN, settings=FAST, cache_dir=cache)
    assert sum(forward_calls) == images
    assert third.extra["feature_cache"] == {"val": False, "train": False}
    assert len(list(cache.glob("*.pt"))) == 2  # the stale files replaced, not accumulated
    assert third.metrics != first.metrics


def test_a_changed_image_list_recomputes_that_split_only(demo, tmp_path, forward_calls):
    root = tmp_path / "demo"
    shutil.copytree(demo, root)
    checkpoint = save_checkpoint(tmp_path / "final.ckpt", seed=1)
    cache = tmp_path / "eval_cache"
    evaluate_run(checkpoint, root, zeroshot=OWN, settings=FAST, cache_dir=cache)
    next((root / "val").rglob("*.jpg")).unlink()
    forward_calls.clear()
    result = evaluate_run(checkpoint, root, zeroshot=OWN, settings=FAST, cache_dir=cache)
    assert result.extra["feature_cache"] == {"val": False, "train": True}
    assert sum(forward_calls) == CLASSES * TINY.val_per_class - 1 == len(result.predictions)


def test_shipped_imagenet_names_need_the_1000_wnid_folders(demo, checkpoint, forward_calls):
    with pytest.raises(InputError, match=r"1000 ImageNet-1k class folders .* found 16") as err:
        evaluate_run(checkpoint, demo, zeroshot={"classnames": "openai_imagenet"}, settings=FAST)
    assert err.value.path == str(demo / "val") and forward_calls == []  # before any encoding
    wnids = ["n01440764", "n01443537"] + [f"n0{2000000 + i:07d}" for i in range(997)]
    wnids.append("n15075141")
    assert imagenet_classnames(wnids, "val") == list(IMAGENET_CLASSNAMES)
    assert imagenet_classnames(wnids, "val")[0] == "tench"
    with pytest.raises(InputError, match="sorted order"):
        imagenet_classnames([f"class{i:04d}" for i in range(1000)], "val")
    with pytest.raises(InputError, match="sorted order"):
        imagenet_classnames(wnids[1:] + ["n16000000"], "val")  # shifted by one class


def script():
    spec = importlib.util.spec_from_file_location("flip_script", ROOT / "scripts" / "flip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_writes_the_protocol_into_metrics_and_lists_damaged_train_images(
    demo, checkpoint, tmp_path, capsys
):
    root = tmp_path / "demo"
    shutil.copytree(demo, root)
    damaged = sorted((root / "train").rglob("*.jpg"))[5]
    damaged.write_bytes(damaged.read_bytes()[:200])
    out = tmp_path / "run"
    args = [
        "evaluate", "--checkpoint", checkpoint, "--pretrained", checkpoint, "--val", root,
        "--zeroshot", json.dumps(OWN), "--evaluate", json.dumps(FAST),
        "--cache-dir", out / "eval_cache", "--metrics", out / "metrics.json",
        "--predictions", out / "predictions.parquet", "--skipped", out / "val.skipped.tsv",
        "--train-skipped", out / "train.skipped.tsv", "--dataset", "demo",
        "--experiment", "e", "--settings", json.dumps({"model": "flip-tiny"}),
    ]  # fmt: skip
    assert run_cli(script().build_parser, [str(a) for a in args]) == 0
    record = json.loads((out / "metrics.json").read_text())
    accuracies = {"zeroshot_top1", "zeroshot_top5", "probe_top1"}
    assert set(record["metrics"]) == accuracies | {"image_gflops"}  # the counted cost
    assert record["metrics"]["image_gflops"] > 0 and not record["higher_is_better"]["image_gflops"]
    extra = record["extra"]
    assert extra["templates"] == len(TEMPLATES) and extra["probe_l2"] in extra["probe_l2_grid"]
    assert len(extra["probe_l2_grid"]) == FAST["probe_l2_steps"]
    assert extra["train_images"] == CLASSES * TINY.train_per_class - 1
    assert extra["train_skipped"] == 1 and extra["val_skipped"] == 0
    rows = (out / "train.skipped.tsv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(f"{damaged}\ttrain/")
    assert (out / "val.skipped.tsv").read_text().splitlines() == ["path\titem\tproblem"]
    capsys.readouterr()
    failing = [str(a) for a in args] + ["--on-bad-sample", "fail"]
    assert run_cli(script().build_parser, failing) == 2  # the cache's record of it, too
    assert f"error: {damaged}: not a readable image" in capsys.readouterr().err
