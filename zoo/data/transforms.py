"""Training augmentation (albumentations): for digits and their masks, and for your own images.

Geometric transforms move image and mask together (image: bilinear, mask: nearest, so masks
stay integer labels; the border fills with 0 / background). No flips: a mirrored 2 or 7 is no
longer that digit. Photometric changes are multiplicative (gamma, multiplicative noise), so a
background pixel stays exactly 0 and a digit pixel stays above 0: the augmented pair still
obeys "background exactly where the image is 0" up to interpolation at digit edges.
"""

from __future__ import annotations

import albumentations as A
import cv2

from zoo.data.m2nist import BACKGROUND


def train_transform(strength: float = 1.0) -> A.Compose:
    """The default training pipeline, for float32 (H, W) images in [0, 1] and uint8 label masks.

    Args:
        strength: scales shift, scale, rotation and distortion ranges (0 turns geometry off).
    """
    s = float(strength)
    edge = dict(border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=BACKGROUND)
    interp = dict(interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)
    return A.Compose(
        [
            A.Affine(
                translate_percent=(-0.06 * s, 0.06 * s),
                scale=(1 - 0.1 * s, 1 + 0.1 * s),
                rotate=(-12 * s, 12 * s),
                p=0.8,
                **interp,
                **edge,
            ),
            A.OneOf(
                [
                    A.ElasticTransform(alpha=max(1e-3, 20 * s), sigma=5, p=1.0, **interp, **edge),
                    A.GridDistortion(num_steps=5, distort_limit=0.2 * s, p=1.0, **interp, **edge),
                ],
                p=0.3,
            ),
            A.RandomGamma(gamma_limit=(70, 140), p=0.3),
            A.MultiplicativeNoise(multiplier=(0.8, 1.2), elementwise=True, p=0.3),
        ]
    )


def folder_transform(
    rgb: bool, flips: bool = True, color_jitter: bool = True, square: bool = True
) -> A.Compose | None:
    """The default augmentation of your own images (uint8) and label masks: what fits most real data.

    Micrographs, scans and aerial images have no preferred orientation: horizontal and vertical
    flips, and 90-degree rotations where the crops are square. Colour jitter (brightness,
    contrast, saturation, hue) only for RGB. Nothing is resampled, so labels stay exact.

    Args:
        rgb: the images have three channels.
        flips: flips and 90-degree rotations (turn off for data with an up and a down, like street scenes).
        square: the crops are square (90-degree rotations keep their shape).
    """
    steps = []
    if flips:
        steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
        if square:
            steps.append(A.RandomRotate90(p=0.5))
    if rgb and color_jitter:
        steps.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5))
    return A.Compose(steps) if steps else None
