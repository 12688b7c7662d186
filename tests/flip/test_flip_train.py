"""FLIP data pipeline, training, resume, init from a pre-trained run, zero-shot and probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workflow.common.errors import InputError
from workflow.common.target import RunTarget
from workflow.flip.data import ShardDataModule, shard_count
from workflow.flip.demo import DemoSettings, write_demo
from workflow.flip.image_folder import image_folder, image_loader
from workflow.flip.layout import list_shards
from workflow.flip.model import build_clip, image_transforms, tokenizer
from workflow.flip.train import (
    FlipModule,
    load_module,
    load_weights,
    train_experiment,
)
from workflow.flip.zeroshot import (
    image_features,
    linear_probe,
    probe_split,
    zero_shot_accuracy,
    zero_shot_classifier,
)

SETTINGS = {"model": "flip-tiny", "mask_ratio": 0.5, "batch_size": 32, "shuffle": 100,
            "lr": 2e-3, "warmup_steps": 5, "max_epochs": 3}  # fmt: skip
QUIET = {"enable_model_summary": False}
# The zero-shot check: a smaller demo without planted samples (no filtering needed), 2 train
# shards x 160 + 1 val shard, 16 classes x 6 val images; the demo training settings at mask
# 0.5 with batch 32 (100 steps): about 15 s on one thread.
ZS_DEMO = DemoSettings(shards=3, samples_per_shard=160, val_per_class=6, bad_per_reason=0, seed=0)
ZS_SETTINGS = {"model": "flip-tiny", "mask_ratio": 0.5, "batch_size": 32, "shuffle": 200,
               "lr": 2e-3, "warmup_steps": 20, "max_epochs": 10}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def datamodule(shards: list[Path], seed: int, batch_size: int = 16) -> ShardDataModule:
    model = build_clip({"model": "flip-tiny"})
    train, val = image_transforms(model)
    settings = {"batch_size": batch_size, "shuffle": 50}
    return ShardDataModule(shards, settings, train, val, tokenizer({}), seed=seed)


def test_pipeline_batches_epoch_length_and_determinism(flip_filtered):
    shards = list_shards(flip_filtered[0])
    data = datamodule(shards, seed=1)
    assert data.train_samples == sum(shard_count(p) for p in shards[:-1]) == 210
    assert data.val_shards == shards[-1:]
    batches = list(data.train_dataloader())
    assert len(data.train_dataloader()) == len(batches) == 210 // 16
    images, tokens, info = batches[0]
    assert images.shape == (16, 3, 64, 64) and images.dtype == torch.float32
    assert tokens.shape == (16, 32) and tokens.dtype == torch.long
    assert len(info["keys"]) == len(info["shards"]) == 16
    assert set(info["shards"]) <= {str(p) for p in shards[:-1]}
    # each training shard is named done once, by the batch holding its last sample
    done = [url for _, _, i in batches for url in i["done"]]
    assert len(done) == len(set(done)) and len(done) <= 3
    for url in done:
        last = max(i for i, (_, _, b) in enumerate(batches) if url in b["shards"])
        assert url in batches[last][2]["done"]
    again = list(datamodule(shards, seed=1).train_dataloader())
    other = list(datamodule(shards, seed=2).train_dataloader())
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(batches, other, strict=True))
    val = list(data.val_dataloader())
    assert len(val) == 70 // 16  # one ordered pass, full batches only


def test_pipeline_resamples_with_more_workers_than_shards(flip_filtered, caplog):
    shards = list_shards(flip_filtered[0])
    model = build_clip({"model": "flip-tiny"})
    train, val = image_transforms(model)
    data = ShardDataModule(shards[:2], {"batch_size": 16, "num_workers": 2}, train, val,
                           tokenizer({}), seed=0)  # fmt: skip
    dataset = data.train_dataset()
    assert "resampling" in caplog.text
    assert len(dataset) == 70 // 16 + (70 // 16) % 2  # rounded up to whole batches per worker


def test_one_shard_without_val_shards_is_an_input_error(flip_filtered):
    with pytest.raises(InputError, match="held out"):
        datamodule(list_shards(flip_filtered[0])[:1], seed=0)


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(flip_filtered, tmp_path_factory) -> tuple[Path, Path]:
    """3 epochs of flip-tiny at mask 0.5 (18 steps), run as 2 epochs then resumed to 3."""
    shards = list_shards(flip_filtered[0])
    run = tmp_path_factory.mktemp("flip_run")
    final = run / "final.ckpt"
    first = train_experiment({**SETTINGS, "max_epochs": 2}, shards, RunTarget(run, final),
                             trainer_overrides=QUIET)  # fmt: skip
    assert first.resumed_from_epoch is None
    second = train_experiment(SETTINGS, shards, RunTarget(run, final), trainer_overrides=QUIET)
    assert second.resumed_from_epoch == 1
    return run, final


def test_training_lowers_val_loss_and_resumes(trained):
    run, final = trained
    epochs = history(run)
    assert [e["epoch"] for e in epochs] == [0, 1, 2]  # resumed, not restarted
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"] - 0.05
    assert "images_per_s_epoch" in epochs[-1]
    module = load_module(final)
    assert not module.training
    assert module.model.logit_scale.exp() <= 100.0 + 1e-4
    info = torch.load(final, map_location="cpu", weights_only=False)["run_info"]
    assert info["resumed_from_epoch"] == 1 and info["monitor"] == "val_loss"


def test_unmasked_tuning_starts_from_the_pretrained_weights(trained, flip_filtered, tmp_path):
    _, final = trained
    pretrained = load_module(final)
    tuned = FlipModule({**SETTINGS, "mask_ratio": 0.0})
    load_weights(tuned, final)
    for (name, a), b in zip(pretrained.state_dict().items(), tuned.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    data = datamodule(list_shards(flip_filtered[0]), seed=0)
    batch = next(iter(data.val_dataloader()))
    tuned.eval()
    with torch.no_grad():
        a = pretrained.contrastive_loss(batch, pretrained.val_criterion)
        b = tuned.contrastive_loss(batch, tuned.val_criterion)
    assert torch.allclose(a, b)
    fresh = FlipModule({**SETTINGS, "mask_ratio": 0.0}).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh.contrastive_loss(batch, fresh.val_criterion), a)
    result = train_experiment(
        {**SETTINGS, "mask_ratio": 0.0, "lr": 1e-4, "max_epochs": 1},
        list_shards(flip_filtered[0]), RunTarget(tmp_path / "tune", tmp_path / "tuned.ckpt"),
        init_checkpoint=final, trainer_overrides=QUIET,
    )  # fmt: skip
    assert result.resumed_from_epoch is None
    info = torch.load(tmp_path / "tuned.ckpt", map_location="cpu", weights_only=False)
    assert info["run_info"]["init_checkpoint"] == str(final)
    assert info["hyper_parameters"]["settings"]["mask_ratio"] == 0.0


def test_init_checkpoint_of_another_architecture_is_an_input_error(trained, tmp_path):
    _, final = trained
    module = FlipModule({"model": "ViT-B-16"})
    with pytest.raises(InputError, match="do not fit"):
        load_weights(module, final)


@pytest.fixture(scope="module")
def demo_trained(tmp_path_factory) -> tuple[Path, Path]:
    """(demo root, final checkpoint) of a short pre-training on the ZS_DEMO shards."""
    root = tmp_path_factory.mktemp("flip_zs")
    write_demo(root / "demo", ZS_DEMO)
    run = root / "run"
    train_experiment(ZS_SETTINGS, list_shards(root / "demo" / "shards"),
                     RunTarget(run, run / "final.ckpt"), trainer_overrides=QUIET)  # fmt: skip
    return root / "demo", run / "final.ckpt"


def test_zero_shot_beats_3x_chance_and_probe_on_the_demo_val_set(demo_trained):
    demo, final = demo_trained
    module = load_module(final)
    _, val = image_transforms(module.model)
    dataset, names = image_folder(demo, val)
    assert len(names) == 16 and names[0] == "blue circle" and len(dataset) == 16 * 6
    classifier = zero_shot_classifier(module.model, tokenizer(module.settings), names)
    assert classifier.shape == (64, 16)
    assert torch.allclose(classifier.norm(dim=0), torch.ones(16))
    top1, top5 = zero_shot_accuracy(module.model, image_loader(dataset), classifier)
    # the must-show: zero-shot top-1 >= 3x chance on the held-out val set
    assert top1 >= 3 / len(names), (top1, top5)
    assert top1 <= top5 and top5 >= 5 * 3 / len(names)
    features, labels = image_features(module.model, image_loader(dataset))
    train, test = probe_split(labels, 0.5, seed=0)
    again, _ = probe_split(labels, 0.5, seed=0)
    assert (train == again).all() and not set(train) & set(test)
    assert len(set(labels[train].tolist())) == 16 == len(set(labels[test].tolist()))
    accuracy = linear_probe(features[train], labels[train], features[test], labels[test])
    assert accuracy >= 3 / len(names)


def test_linear_probe_separates_separable_features():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=generator) * 3
    labels = torch.arange(4).repeat_interleave(20)
    features = centres[labels] + 0.3 * torch.randn(80, 8, generator=generator)
    train, test = probe_split(labels, 0.5)
    assert linear_probe(features[train], labels[train], features[test], labels[test]) == 1.0
    shuffled = labels[torch.randperm(80, generator=generator)]
    assert linear_probe(features[train], shuffled[train], features[test], shuffled[test]) < 0.7


def test_evaluate_checkpoint_scores_every_val_image(demo_trained):
    from workflow.flip.evaluate import evaluate_checkpoint

    demo, final = demo_trained
    metrics, predictions, settings = evaluate_checkpoint(final, demo)
    assert len(predictions) == 16 * 6 and predictions["label"].nunique() == 16
    hits = (predictions["label"] == predictions["zero_shot"]).mean()
    assert metrics["zeroshot_top1"] == pytest.approx(hits) and hits >= 3 / 16
    assert metrics["zeroshot_top1"] <= metrics["zeroshot_top5"] and metrics["probe_top1"] > 0
    assert predictions["image"].iloc[0].startswith("val/") and settings["model"] == "flip-tiny"
    run_info = torch.load(final, weights_only=False)["run_info"]
    assert run_info["images_per_s"] > 0  # the pre-training's throughput, for the figure


def test_tune_settings_take_their_own_lr_and_length_never_pretrainings():
    from workflow.common.config import ConfigError
    from workflow.flip.train import peak_lr, sample_budget, tune_settings

    pre = {"mask_ratio": 0.75, "lr": 1e-3, "max_epochs": 10, "max_samples": 5000,
           "warmup_steps": 100, "batch_size": 64}  # fmt: skip
    tuned = tune_settings(pre, {"lr": 1e-4, "warmup_steps": 5})
    assert tuned == {"mask_ratio": 0.0, "lr": 1e-4, "max_epochs": 1, "warmup_steps": 5,
                     "batch_size": 64}  # fmt: skip
    # no lr in the section: a hundredth of pre-training's, in pre-training's form
    assert tune_settings(pre, {})["lr"] == pytest.approx(1e-5)
    scaled = tune_settings({**pre, "base_lr": 4e-6}, {"lr_fraction": 0.5})
    assert "lr" not in scaled and scaled["base_lr"] == pytest.approx(2e-6)
    assert peak_lr(scaled, world_size=2) == pytest.approx(2e-6 * 128 / 256)
    with pytest.raises(ConfigError, match="lr and base_lr"):
        tune_settings(pre, {"lr": 1e-4, "base_lr": 1e-8})
    # a fraction of an epoch becomes a sample budget, within max_samples when both are set
    budget = sample_budget({"epoch_fraction": 0.32, "max_epochs": 1}, train_samples=1000)
    assert budget["max_samples"] == 320 and budget["max_epochs"] == 1
    both = sample_budget({"epoch_fraction": 2.5, "max_samples": 900, "max_epochs": 1}, 1000)
    assert both["max_samples"] == 900 and both["max_epochs"] == 3


def test_leonardo_tuning_runs_at_its_own_lr_for_a_third_of_an_epoch():
    """The effective tuning settings built from config/leonardo.yaml as the rules build them:
    the tune section's lr and length, not pre-training's."""
    import yaml

    from tests.conftest import ROOT
    from workflow.common.config import deep_merge, validate_config
    from workflow.common.experiments import run_settings
    from workflow.common.training import TrainSettings, step_budget
    from workflow.flip.train import peak_lr, sample_budget, tune_settings

    config = validate_config(deep_merge(
        yaml.safe_load((ROOT / "config/config.yaml").read_text()),
        yaml.safe_load((ROOT / "config/leonardo.yaml").read_text()),
    ))  # fmt: skip
    flip, world, samples = config["flip"], 4, 400_000_000  # GPU_NODE_DDP; LAION-400M
    tune = flip["tune"]
    for experiment in flip["experiments"]:
        pre = run_settings(flip, experiment)
        tuned = tune_settings(pre, tune)
        batch = int(tuned["batch_size"]) * world
        assert peak_lr(pre, world) == pytest.approx(pre["base_lr"] * batch / 256)
        assert peak_lr(tuned, world) == pytest.approx(tune["base_lr"] * batch / 256)
        assert peak_lr(tuned, world) == pytest.approx(peak_lr(pre, world) / 100)
        assert tuned["mask_ratio"] == 0.0 and tuned["warmup_steps"] == tune["warmup_steps"]
        budget = sample_budget(tuned, samples)
        assert budget["max_samples"] == int(tune["epoch_fraction"] * samples)
        steps = step_budget(TrainSettings(run_dir=ROOT, max_epochs=budget["max_epochs"],
                            max_samples=budget["max_samples"], batch_size=tuned["batch_size"]),
                            world)  # fmt: skip
        assert steps == -(-budget["max_samples"] // batch) == 125_000


def test_damaged_val_images_follow_the_policy(flip_demo, tmp_path):
    """A bomb and a truncated JPEG in the val set: left out and listed, or the stage stops."""
    import shutil

    from tests.hostile.damage import png_bomb, truncate
    from workflow.common.errors import Skips

    root = tmp_path / "flip"
    shutil.copytree(flip_demo, root)
    images = sorted((root / "val").rglob("*.jpg"))
    images[0].write_bytes(png_bomb())
    truncate(images[1])
    skips = Skips()
    dataset, names = image_folder(root, lambda image: image, policy="skip", skips=skips)
    assert len(dataset) == len(images) - 2 and len(dataset.targets) == len(dataset)
    assert sorted(path for path, _, _ in skips.rows) == sorted(map(str, images[:2]))
    assert {path for path, _ in dataset.samples}.isdisjoint(map(str, images[:2]))
    assert dataset[0][0].mode == "RGB"  # loaded by the shared decoder
    with pytest.raises(InputError, match="decompression bomb") as err:
        image_folder(root, lambda image: image, policy="fail")
    assert err.value.path == str(images[0])
