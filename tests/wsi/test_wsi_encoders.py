"""Encoder weights as released (DINO, timm, torchvision) load exactly or fail naming what is
missing, and per-scale weights send each scale's tiles through that scale's encoder."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import timm
import torch

from tests.conftest import malicious_checkpoint, run_script
from workflow.common.config import ConfigError
from workflow.common.errors import InputError
from workflow.wsi.encoders import import_weights
from workflow.wsi.features import build_encoders, encode_slide
from workflow.wsi.sources import check_encoder, features_settings

CNN = "mobilenetv3_small_050"


def tiny_vit(seed: int) -> torch.nn.Module:
    """A two-block ViT with DINO's names (cls_token, pos_embed, blocks.N...), 32 px."""
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=0)


def dino_checkpoint(teacher: dict, student: dict) -> dict:
    """A DINO training checkpoint as main_dino.py saves it: MultiCropWrapper names, a
    projection head, the student under DDP, optimiser, loss state and the arguments."""
    head = {"head.mlp.0.weight": torch.randn(8, 192), "head.last_layer.weight_g": torch.ones(16, 1)}
    return {
        "teacher": {**{f"backbone.{k}": v for k, v in teacher.items()}, **head},
        "student": {
            **{f"module.backbone.{k}": v for k, v in student.items()},
            **{f"module.{k}": v for k, v in head.items()},
        },
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.0005, "params": [0, 1]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536, lr=0.0005),
        "dino_loss": {"center": torch.zeros(1, 16)},
        "fp16_scaler": None,
    }


def assert_loaded(model: torch.nn.Module, source: dict) -> None:
    own = model.state_dict()
    assert own and all(torch.equal(own[k], source[k]) for k in own), "not the source tensors"


LAYOUTS = {
    "bare state dict": lambda sd, other: sd,
    "timm, with its classifier": lambda sd, other: {**sd, "head.weight": torch.ones(10, 192)},
    "state_dict wrapper": lambda sd, other: {"state_dict": sd, "epoch": 3},
    "model wrapper": lambda sd, other: {"model": sd, "args": argparse.Namespace(model="vit")},
    "DDP module. prefix": lambda sd, other: {f"module.{k}": v for k, v in sd.items()},
    "DINO, teacher": lambda sd, other: dino_checkpoint(sd, other),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_released_layouts_load_the_source_tensors(layout, tmp_path):
    source, other = tiny_vit(1).state_dict(), tiny_vit(2).state_dict()
    torch.save(LAYOUTS[layout](source, other), tmp_path / "w.pth")
    model = tiny_vit(0)
    import_weights(model, tmp_path / "w.pth")
    assert_loaded(model, source)


def test_dino_student_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    teacher, student = tiny_vit(1).state_dict(), tiny_vit(2).state_dict()
    torch.save(dino_checkpoint(teacher, student), tmp_path / "checkpoint.pth")
    model = tiny_vit(0)
    import_weights(model, tmp_path / "checkpoint.pth", checkpoint_key="student")
    assert_loaded(model, student)
    save_file({k: v.contiguous() for k, v in teacher.items()}, tmp_path / "model.safetensors")
    import_weights(model, tmp_path / "model.safetensors")
    assert_loaded(model, teacher)


def test_torchvision_resnet_weights_fit_timm(tmp_path):
    """torchvision's ResNet names are timm's: the same weights give the same features."""
    import torchvision

    torch.manual_seed(3)
    reference = torchvision.models.resnet18().eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    import_weights(model, tmp_path / "resnet18.pth")
    assert_loaded(model, reference.state_dict())
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model(x), reference(x), atol=1e-5)


def test_a_missing_block_or_another_shape_is_named(tmp_path):
    source = tiny_vit(1).state_dict()
    lacking = {k: v for k, v in source.items() if not k.startswith("blocks.1.")}
    path = tmp_path / "checkpoint.pth"
    torch.save(dino_checkpoint(lacking, lacking), path)
    with pytest.raises(InputError) as err:
        import_weights(tiny_vit(0), path)
    assert err.value.path == str(path)
    problem = err.value.problem
    assert f"lack 12 of the encoder's {len(source)} tensors (blocks.1." in problem, problem
    assert "args, dino_loss, epoch, fp16_scaler, optimizer, student, teacher" in problem
    assert "tensors read from teacher" in problem
    torch.save({**source, "pos_embed": torch.zeros(1, 197, 192)}, path)
    with pytest.raises(
        InputError, match=r"another shape.*pos_embed \(1, 197, 192\) for \(1, 5, 192\)"
    ):
        import_weights(tiny_vit(0), path)


def test_unreadable_weights_are_refused_with_why(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save(tiny_vit(1).state_dict(), path)
    packed = tmp_path / "checkpoint.pth.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(InputError, match="gzip-compressed .* gunzip first"):
        import_weights(tiny_vit(0), packed)
    marker = tmp_path / "ran"
    with pytest.raises(InputError, match="refused: .* posix.system|refused: .*os.system"):
        import_weights(tiny_vit(0), malicious_checkpoint(tmp_path / "evil.pth", marker))
    assert not marker.exists()


def seeded_weights(path: Path, seed: int) -> str:
    torch.manual_seed(seed)
    torch.save(timm.create_model(CNN, pretrained=False, num_classes=0).state_dict(), path)
    return str(path)


def features_of(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {name: h5[name]["features"][()] for name in h5}


def scale_pixels(tiling: Path) -> list[torch.Tensor]:
    """Each scale's tiles as the stage reads and normalises them, one batch per scale."""
    from workflow.wsi.features import MEAN, STD, TileDataset
    from workflow.wsi.tiling import read_tiling

    tiles = read_tiling(tiling)
    data = TileDataset(Path(tiles.slide_path), tiles.mpp, tiles.scales)
    rows = [data[i] for i in range(len(data))]
    return [
        (torch.stack([p for p, k in rows if k == s]).float() / 255.0 - MEAN) / STD
        for s in range(len(tiles.scales))
    ]


def test_each_scale_goes_through_its_own_encoder(wsi_tiled, tmp_path):
    tiling = next(iter(wsi_tiled.values()))[0]
    one, two = seeded_weights(tmp_path / "a.pth", 1), seeded_weights(tmp_path / "b.pth", 2)
    settings = {"encoder": CNN, "seed": 0, "weights": {"5": one, "10": two, "x20": one}}
    per_scale = build_encoders(settings)
    assert sorted(per_scale) == [5.0, 10.0, 20.0]
    assert not torch.equal(*(per_scale[m].conv_stem.weight for m in (5.0, 10.0)))
    # one batch holds the slide's tiles: each scale's rows go through its encoder together
    encode_slide(tiling, tmp_path / "mixed.h5", per_scale, batch_size=256)
    mixed = features_of(tmp_path / "mixed.h5")
    with torch.inference_mode():
        for (name, magnification), pixels in zip(
            (("x5", 5.0), ("x10", 10.0), ("x20", 20.0)), scale_pixels(tiling), strict=True
        ):
            assert np.array_equal(mixed[name], per_scale[magnification](pixels).numpy()), name

    with pytest.raises(
        InputError, match=r"tiled at x20, but the per-scale encoder weights name only x5, x10"
    ):
        encode_slide(
            tiling, tmp_path / "no.h5", build_encoders({**settings, "weights": {5: one, 10: two}})
        )
    assert not (tmp_path / "no.h5").exists()
    with pytest.raises(InputError, match="magnification 20 given twice"):
        build_encoders({**settings, "weights": {"20": one, "x20": two}})


def test_per_scale_weights_are_checked_at_start_and_per_dataset():
    track = {
        "features": {"encoder": CNN, "weights": {5: "a5", "10": "a10", 20.0: "a20"}},
        "tile": {"magnifications": [5, 10, 20]},
        "datasets": {
            "cam": {"slides": "s"},
            "lung": {"slides": "s", "features": {"weights": {"x10": "b", "x20": "c"}}},
        },
    }
    check_encoder({**track, "datasets": {"cam": {"slides": "s"}}})
    assert features_settings(track, "cam")["weights"] == {"5": "a5", "10": "a10", "20": "a20"}
    assert features_settings(track, "lung") == {"encoder": CNN, "weights": {"10": "b", "20": "c"}}
    with pytest.raises(
        ConfigError, match=r"wsi.datasets.lung.features.weights: no weights for magnification 5 "
    ):
        check_encoder(track)
    track["features"]["weights"] = {20: "a", "20": "b"}
    with pytest.raises(ConfigError, match="magnification 20 given twice"):
        features_settings(track, "cam")
    track["features"]["weights"] = {"twenty": "a"}
    with pytest.raises(ConfigError, match="'twenty' is not a magnification"):
        check_encoder(track)


def test_the_stage_names_an_unreadable_weights_file(wsi_tiled, tmp_path):
    slide_id, (tiling, *_) = next(iter(wsi_tiled.items()))
    tiles = tmp_path / "tiles.tsv"
    tiles.write_text(f"slide_id\ttiles\n{slide_id}\t{tiling}\n")
    good, corrupt = seeded_weights(tmp_path / "good.pth", 1), tmp_path / "x10.pth"
    corrupt.write_bytes(b"PK\x03\x04 not a checkpoint")
    settings = {"encoder": CNN, "weights": {"5": good, "10": str(corrupt), "20": good}}
    out = tmp_path / "features"
    result = run_script(
        "scripts/wsi.py", "features", "--tiles", tiles, "--index", out / "index.tsv",
        "--skipped", out / "skipped.tsv", "--settings", json.dumps(settings),
        "--on-bad-sample", "skip", check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {corrupt}: not a readable encoder weights"), last
    assert not (out / "index.tsv").exists()
