"""The Lightning side (the `train` extra): module, data modules, metrics, losses, callbacks, the CLI.

The core (`zoo.models`, `zoo.layers`, `zoo.predict`, weights) never imports this package.

- `module`: `SegmentationModule`, the training step around any zoo model;
- `datamodules`: `M2NISTDataModule` and `FolderSegmentation` (your own images and masks);
- `losses`, `metrics`: cross-entropy with class weights and Dice; IoU from one confusion matrix;
- `callbacks`: magnitude pruning and the run report (results.json and its figure);
- `cli`: `ZooCLI`, the LightningCLI behind `python train.py` and `python -m zoo train`.
"""
