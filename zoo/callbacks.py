"""Lightning callbacks used by `train.py`."""

from __future__ import annotations

import logging

import torch
from pytorch_lightning.callbacks import ModelPruning
from torch import nn

log = logging.getLogger(__name__)


class MagnitudePruning(ModelPruning):
    """L1 magnitude pruning of every convolution weight to a target sparsity.

    When epoch `start_epoch` begins, the smallest `amount` fraction of all convolution weights
    (ranked together across layers, or with `per_layer` within each layer) is zeroed and masked; training goes on with the mask, so
    pruned weights stay zero, and that epoch's validation and checkpoints already see the pruned
    model. Checkpoints hold plain, already-zeroed weights; after a resume the mask is rebuilt when
    the next epoch begins. `amount=0` turns pruning off.

    Args:
        amount: target fraction of convolution weights set to zero, in [0, 1).
        start_epoch: the first epoch trained with the mask.
        per_layer: prune `amount` of each convolution's weights instead of `amount` of all of them.
    """

    def __init__(self, amount: float = 0.0, start_epoch: int = 0, per_layer: bool = False) -> None:
        if not 0 <= amount < 1:
            raise ValueError(f"pruning amount must be in [0, 1), found {amount}")
        if start_epoch < 0:
            raise ValueError(f"pruning start_epoch must be >= 0, found {start_epoch}")
        self.target, self.start_epoch, self.per_layer = float(amount), int(start_epoch), bool(per_layer)
        super().__init__(
            "l1_unstructured",
            parameter_names=["weight"],
            use_global_unstructured=not self.per_layer,
            amount=self.target,
            use_lottery_ticket_hypothesis=False,
            make_pruning_permanent=True,
        )

    def filter_parameters_to_prune(self, parameters_to_prune=()):
        return [(m, name) for m, name in parameters_to_prune if isinstance(m, nn.Conv2d)]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        amount = self._amount_now(trainer.current_epoch)
        if amount:
            # torch.nn.utils.prune flattens weights with .view(-1), which channels_last tensors
            # refuse: prune in NCHW, then give the weights (and masks) their layout back
            self._set_layout(torch.contiguous_format)
            self.apply_pruning(amount)
            self._set_layout(torch.channels_last)

    def _set_layout(self, memory_format: torch.memory_format) -> None:
        for module, name in self._parameters_to_prune:
            for attr in (name, f"{name}_orig", f"{name}_mask"):
                t = module._parameters.get(attr, module._buffers.get(attr))
                if t is not None and t.dim() == 4:
                    t.data = t.data.contiguous(memory_format=memory_format)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pass  # pruning happens when an epoch starts, not (as in ModelPruning) when it ends

    def _amount_now(self, epoch: int) -> float:
        # PyTorch prunes `amount` of the weights still unmasked: ask for what reaches the target
        if self.target == 0 or epoch < self.start_epoch:
            return 0.0
        masks = [getattr(m, f"{n}_mask") for m, n in self._parameters_to_prune if hasattr(m, f"{n}_mask")]
        total = sum(getattr(m, n).numel() for m, n in self._parameters_to_prune)
        have = sum(int((mask == 0).sum()) for mask in masks) / total
        need = (self.target - have) / (1 - have)
        if need <= 1 / total:
            return 0.0
        log.info(
            "pruning: epoch %d, %.1f%% -> %.1f%% of convolution weights zero",
            epoch,
            100 * have,
            100 * self.target,
        )
        return need
