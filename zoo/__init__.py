"""fullres-zoo: semantic segmentation with convolutional networks that never downsample."""

from zoo import layers, models, shipped
from zoo.attribution import explain
from zoo.builder import create_model, list_models
from zoo.checkpoint import export, load
from zoo.inference import export_onnx, predict
from zoo.models import ZooModel, classifier_to_segmenter, count_parameters
from zoo.registry import is_model, model_arguments, register_model
from zoo.rf import effective_receptive_field, receptive_field

__version__ = "0.2.0"

__all__ = [
    "ZooModel",
    "classifier_to_segmenter",
    "count_parameters",
    "create_model",
    "export",
    "export_onnx",
    "load",
    "predict",
    "effective_receptive_field",
    "explain",
    "is_model",
    "layers",
    "list_models",
    "model_arguments",
    "models",
    "receptive_field",
    "register_model",
    "shipped",
    "from_pretrained",
    "save_pretrained",
]


def __getattr__(name: str):
    # the Hub layout needs huggingface_hub (the `hub` extra): loaded only when asked for
    if name in ("save_pretrained", "from_pretrained"):
        from zoo import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
