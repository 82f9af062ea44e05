"""Train a zoo model: `python train.py` runs the packaged recipe (vgg7_dilated on M2NIST).

`python train.py fit --model.arch unet`, `--config configs/shared.yaml`, `--data FolderSegmentation
--data.root DIR` for your own images; `python train.py fit --print_config` shows what will run.
The same command is `python -m zoo train` from an installed wheel.
"""

import sys

from zoo.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
