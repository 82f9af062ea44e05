"""torch.hub entry points: every registered model, e.g.

    torch.hub.load("path/to/fullres-zoo", "vgg7_dilated_context", source="local", pretrained=True)

`pretrained=True` loads the weights shipped in `checkpoints/` (offline); other keyword arguments
go to `zoo.create_model`.
"""

import zoo.builder as _builder

dependencies = ["torch", "numpy", "safetensors"]


def _entry_point(name: str):
    def build(pretrained: bool = False, **kwargs):
        return _builder.create_model(name, pretrained=pretrained, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"`zoo.create_model({name!r}, pretrained=pretrained, **kwargs)`."
    return build


for _name in _builder.list_models():
    globals()[_name] = _entry_point(_name)
