"""Contrastive objectives: pure loss functions plus thin registered modules.

Importing this package registers every objective in ``OBJECTIVES``.
"""

from omnibind.objectives import infonce as infonce
from omnibind.objectives import siglip as siglip
from omnibind.objectives import symile as symile
from omnibind.objectives.base import OBJECTIVES as OBJECTIVES
from omnibind.objectives.base import Objective as Objective
from omnibind.objectives.base import create_objective as create_objective
from omnibind.objectives.base import list_objectives as list_objectives
from omnibind.objectives.infonce import infonce_loss as infonce_loss
from omnibind.objectives.siglip import siglip_loss as siglip_loss
from omnibind.objectives.symile import symile_loss as symile_loss

__all__ = [
    "OBJECTIVES",
    "Objective",
    "create_objective",
    "infonce_loss",
    "list_objectives",
    "siglip_loss",
    "symile_loss",
]
