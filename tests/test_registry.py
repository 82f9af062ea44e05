import fnmatch

import pytest
import torch

import zoo

REQUIRED = {
    "vgg4_dilated",
    "vgg4_large_kernel",
    "vgg4_strided",
    "cascade10",
    "cascade10_depthwise",
    "resnet18_dilated",
    "resnet18_strided",
    "vgg4_dilated_wide",
    "vgg4_large_kernel_wide",
    "vgg4_strided_wide",
}


def test_required_names_registered_and_sorted():
    names = zoo.list_models()
    assert REQUIRED <= set(names)
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_wildcards():
    names = zoo.list_models()
    assert zoo.list_models("vgg4_*") == sorted(n for n in names if n.startswith("vgg4_"))
    assert zoo.list_models("*_wide") == ["vgg4_dilated_wide", "vgg4_large_kernel_wide", "vgg4_strided_wide"]
    assert zoo.list_models("cascade10") == ["cascade10"]
    assert zoo.list_models("nothing*") == []
    both = zoo.list_models(["cascade*", "resnet18_strided"])
    assert both == sorted([n for n in names if fnmatch.fnmatch(n, "cascade*")] + ["resnet18_strided"])


def test_default_is_m2nist_pixel_model():
    m = zoo.create_model("vgg4_dilated")
    assert (m.in_channels, m.num_classes, m.head_type) == (1, 11, "pixel")
    assert m(torch.rand(8, 1, 64, 84)).shape == (8, 11, 64, 84)


def test_seed_cifar_form():
    m = zoo.create_model("vgg4_dilated", in_channels=3, num_classes=10, head="classify")
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_name_lists_closest():
    with pytest.raises(ValueError, match="unknown model 'vgg4_dilatd'") as e:
        zoo.create_model("vgg4_dilatd")
    assert "vgg4_dilated" in str(e.value)


def test_unknown_keyword_is_named():
    with pytest.raises(TypeError, match="'depth'"):
        zoo.create_model("vgg4_dilated", depth=5)
    with pytest.raises(TypeError, match="'pool_sizee'"):
        zoo.create_model("vgg4_stitch", pool_sizee=3)


@pytest.mark.parametrize(
    "name, kwargs, word",
    [
        ("vgg4_dilated", {"head": "softmax"}, "head"),
        ("vgg4_dilated", {"num_classes": 0}, "num_classes"),
        ("vgg4_dilated", {"in_channels": -1}, "in_channels"),
        ("vgg4_dilated", {"dilations": (1, 2)}, "dilations"),
        ("vgg4_dilated", {"widths": (16, 0, 32, 48)}, r"widths\[1\]"),
        ("vgg4_large_kernel", {"kernel_sizes": (3, 4, 7, 9)}, r"kernel_sizes\[1\]"),
        ("vgg4_dilated", {"pool": "avg"}, "pool"),
        ("vgg4_strided", {"pool": "stitch"}, "stitch"),
        ("vgg4_stitch", {"pool_at": (3, 1)}, "pool_at"),
        ("cascade10_depthwise", {"widths": (16,) * 9 + (20,)}, "depthwise"),
        ("resnet18_dilated", {"blocks": (2, 2)}, "blocks"),
        ("resnet18_dilated", {"tail_dilations": (0,)}, "tail_dilations"),
    ],
)
def test_invalid_keyword_values_are_named(name, kwargs, word):
    with pytest.raises(ValueError, match=word):
        zoo.create_model(name, **kwargs)


def test_model_arguments_cover_family_options():
    args = zoo.model_arguments("vgg4_dilated")
    for key in ("widths", "dilations", "kernel_sizes", "in_channels", "num_classes", "head", "pool"):
        assert key in args
    assert "tail_dilations" in zoo.model_arguments("resnet18_dilated")


def test_no_pretrained_weights_is_a_clear_error():
    names = set(zoo.list_models(pretrained=True))
    missing = [n for n in zoo.list_models() if n not in names]
    if missing:
        with pytest.raises(FileNotFoundError, match=missing[0]):
            zoo.create_model(missing[0], pretrained=True)


def test_unknown_weight_tag_names_the_shipped_tags():
    # every shipped model has two: the m2nist layout (default) and the scatter variant
    with pytest.raises(
        FileNotFoundError, match="tagged 'cifar' ship for 'vgg4_dilated'; tags with weights: m2nist, scatter"
    ):
        zoo.create_model("vgg4_dilated.cifar", pretrained=True)
    assert zoo.create_model("vgg4_dilated.scatter", pretrained=True).card["data"]["layout"] == "scatter"
