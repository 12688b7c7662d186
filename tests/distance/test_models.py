import pytest
import torch
from torch.utils.data import DataLoader

from workflow.common.errors import InputError
from workflow.distance.data import ObjectDataset, training_statistics
from workflow.distance.models import DisNet, ZhuFang, resnet_trunk
from workflow.distance.store import FrameDataset, collate_frames


def test_frame_items_are_uint8_with_boxes_inside(prepared):
    dataset = FrameDataset(prepared["train"])
    item = dataset[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 64, 112)
    boxes = item["boxes"]
    assert boxes.shape[1] == 4 and (boxes[:, 2] > boxes[:, 0]).all()
    assert (boxes[:, 2] <= 112 + 1).all() and (boxes[:, 3] <= 64 + 1).all()
    assert len(item["target"]) == len(boxes) == len(item["geometry"])


def test_zhu_and_disnet_forward_in_metres(prepared):
    stats = training_statistics(prepared["train"])
    zhu = ZhuFang(
        lr=1e-3, weight_decay=0.0, backbone="resnet18", feature_layer="layer3", roi_size=3, **stats
    )
    batch = next(
        iter(DataLoader(FrameDataset(prepared["train"]), batch_size=2, collate_fn=collate_frames))
    )
    out = zhu(batch)
    assert out.shape == batch["target"].shape and torch.isfinite(out).all()
    loss = torch.nn.functional.l1_loss(out, batch["target"])
    loss.backward()
    assert zhu.trunk[0].weight.grad is not None

    disnet = DisNet(lr=1e-3, weight_decay=0.0, **stats)
    objects = next(iter(DataLoader(ObjectDataset(prepared["train"]), batch_size=8)))
    # an untrained network is centred on the training mean, in metres
    assert abs(disnet(objects).mean().item() - stats["target_mean"]) < 3 * stats["target_std"]


def test_pretrained_weights_only_from_a_local_path(tmp_path):
    with pytest.raises(InputError, match="pretrained weights not found"):
        resnet_trunk("resnet18", str(tmp_path / "missing.pth"), "layer3")
    state = resnet_trunk("resnet18", None, "layer4")[0].state_dict()
    torch.save(
        {
            f"{k.replace('0.', 'conv1.', 1) if k.startswith('0.') else k}": v
            for k, v in state.items()
        },
        tmp_path / "partial.pth",
    )
    with pytest.raises(InputError, match="not resnet18 weights"):
        resnet_trunk("resnet18", str(tmp_path / "partial.pth"), "layer3")
