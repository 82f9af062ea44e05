"""fullres-zoo: semantic segmentation with convolutional networks that never downsample."""

from zoo import layers, models
from zoo.models import ZooModel, classifier_to_segmenter
from zoo.rf import receptive_field
from zoo.registry import create_model, is_model, list_models, model_arguments, register_model

__version__ = "0.1.0"

__all__ = [
    "ZooModel",
    "classifier_to_segmenter",
    "create_model",
    "is_model",
    "layers",
    "list_models",
    "model_arguments",
    "models",
    "receptive_field",
    "register_model",
]
