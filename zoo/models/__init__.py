"""Model families; importing this module registers every variant."""

from zoo.models import cascade, resnet, vgg  # noqa: F401  (registration side effects)
from zoo.models.base import ZooModel, classifier_to_segmenter, count_parameters
from zoo.models.resnet import ResNet
from zoo.models.unet import UNet
from zoo.models.vgg import VGG

__all__ = ["ResNet", "UNet", "VGG", "ZooModel", "classifier_to_segmenter", "count_parameters"]
