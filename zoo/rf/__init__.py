"""Receptive fields: theoretical (traced from the graph) and effective (measured by gradients)."""

from zoo.rf.effective import EffectiveReceptiveField, effective_receptive_field, radius_of_mass
from zoo.rf.theory import ReceptiveField, RFLayer, receptive_field

__all__ = [
    "EffectiveReceptiveField",
    "RFLayer",
    "ReceptiveField",
    "effective_receptive_field",
    "radius_of_mass",
    "receptive_field",
]
