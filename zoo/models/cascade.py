"""Deep cascades of 3x3 convolutions: the receptive field of the 4-layer VGGs from depth alone.

cascade10: ten 3x3 convs (stride 1, dilation 1, "same" padding, bias), widths
16, 20, 24, 28, 30, 32, 36, 38, 42, 48; BN + ReLU after the first nine, none after the tenth.
Receptive field 1 + 10 * 2 = 21.

cascade10_depthwise: the low-parameter variant, standard and depthwise 3x3 convs alternating
(depthwise ones keep the channel count). Params for 3 inputs, 10 classes, head="classify":

    layer  type          in -> out  conv weights + bias   BN
    1      3x3           3 -> 16    432 + 16              32
    2      3x3 depthwise 16 -> 16   144 + 16              32
    3      3x3           16 -> 24   3,456 + 24            48
    4      3x3 depthwise 24 -> 24   216 + 24              48
    5      3x3           24 -> 32   6,912 + 32            64
    6      3x3 depthwise 32 -> 32   288 + 32              64
    7      3x3           32 -> 40   11,520 + 40           80
    8      3x3 depthwise 40 -> 40   360 + 40              80
    9      3x3           40 -> 48   17,280 + 48           96
    10     3x3 depthwise 48 -> 48   432 + 48              -  (no BN, no ReLU)
    head   GAP + linear  48 -> 10   480 + 10
    total  42,394 trainable parameters; receptive field 21.
"""

from __future__ import annotations

from zoo.models.vgg import VGG
from zoo.registry import register_model

CASCADE10_WIDTHS = (16, 20, 24, 28, 30, 32, 36, 38, 42, 48)
CASCADE10_DW_WIDTHS = (16, 16, 24, 24, 32, 32, 40, 40, 48, 48)


@register_model
def cascade10(**kwargs) -> VGG:
    """Ten 3x3 convs, widths 16..48, the last without BN/ReLU; full resolution, receptive field 21."""
    return VGG(**{"widths": CASCADE10_WIDTHS, "final_act": False, **kwargs})


@register_model
def cascade10_depthwise(**kwargs) -> VGG:
    """The 3x3 cascade with depthwise convs interleaved (42,394 params in the CIFAR form); rf 21."""
    return VGG(
        **{"widths": CASCADE10_DW_WIDTHS, "depthwise": (False, True) * 5, "final_act": False, **kwargs}
    )
