"""Theoretical receptive fields: hand-derived values and an empirical gradient-support check."""

import pytest
import torch
import torch.nn as nn

import zoo
from zoo.rf import receptive_field


@pytest.mark.parametrize(
    "name, expected",
    [
        ("vgg4_dilated", 31),  # 1 + 2*(1+2+4+8)
        ("vgg7_dilated", 67),  # 1 + 2*(1+1+2+4+8+16+1)
        ("vgg7_dilated_context", 95),  # 67, then a 29x29 window mean: + 28
        ("vgg7_dilated_skip_context", 95),  # the same layers; the skip's field (5) is inside
        ("vgg7_dilated_skip16_context", 95),
        ("vgg4_large_kernel", 21),  # 1 + 2+4+6+8
        ("cascade10", 21),  # 1 + 10*2
        ("cascade10_depthwise", 21),
        ("vgg4_strided", 17),  # 3, +2*1, +2*2, +2*4 with jumps 1, 2, 4
        ("vgg4_stitch", 38),  # 3, pool +1, conv +2*2, pool +2, conv +2*4, pool +4, conv +2*8
        ("vgg4_maxpool", 38),  # the same taps, strided
        ("resnet18_dilated", 123),  # stem 3, then 4 convs per stage: +8, +16, +32, +64
        ("resnet18_dilated_degrid", 137),  # + 2*(4+2+1)
        ("resnet18_strided", 109),  # stem 3, stage 1 +8; stages 2-4: +2j then 3 x +4j, j = 1, 2, 4
    ],
)
def test_expected_fields(name, expected):
    assert receptive_field(zoo.create_model(name)).size == expected


def test_classify_head_is_marked_global():
    rf = receptive_field(zoo.create_model("vgg4_dilated", head="classify"))
    assert rf.global_pool and rf.size == 31
    assert "global average pooling" in str(rf)


def test_table_lists_every_conv_with_its_dilation():
    table = receptive_field(zoo.create_model("vgg4_dilated"))
    convs = [r for r in table.layers if r.kind == "conv"]
    assert [r.dilation[0] for r in convs] == [1, 2, 4, 8, 1]
    assert [r.rf[0] for r in convs] == [3, 7, 15, 31, 31]
    text = str(table)
    assert "dilation" in text.splitlines()[0] and text.endswith("receptive field 31")


def test_non_square_kernel():
    rf = receptive_field(nn.Sequential(nn.Conv2d(1, 1, (3, 5)), nn.Conv2d(1, 1, (1, 3), dilation=2)))
    assert rf.size == (3, 9)


def _gradient_support(model: nn.Module, size: int = 161) -> int:
    """Width of the input region that moves the central output, with all-positive weights."""
    model = model.eval()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.constant_(m.weight, 0.01)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.01)
    x = torch.ones(1, model.in_channels, size, size, requires_grad=True, dtype=torch.float64)
    model.double()
    model(x)[0, 0, size // 2, size // 2].backward()
    rows = (x.grad[0, 0].abs() > 0).any(dim=1).nonzero()
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize(
    "name", ["vgg4_dilated", "vgg4_large_kernel", "cascade10", "cascade10_depthwise", "resnet18_dilated"]
)
def test_traced_field_matches_gradient_support(name):
    model = zoo.create_model(name)
    assert _gradient_support(model) == receptive_field(model).size


def test_unet_small_by_hand():
    # 3x3, 3x3 (5); pool (6, jump 2); 2 x 3x3 (+4, +4: 14); pool (16, jump 4); 2 x 3x3 (32);
    # bilinear x2 reads 2 coarse inputs (+4: 36, jump 2); 1x1; 2 x 3x3 (44); bilinear (+2: 46,
    # jump 1); 1x1; 2 x 3x3 (50); 1x1 head
    rf = zoo.receptive_field(zoo.create_model("unet_small"))
    assert rf.size == 50 and rf.jump == (1, 1)
