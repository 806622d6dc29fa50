"""Balanced multimodal training: policies over the presence mask and the per-modality gradients.

Importing this package registers every method in ``BALANCE_METHODS`` (selected with ``task.balance``):
``ogm_ge`` (:mod:`.ogm_ge`), ``agm`` (:mod:`.agm`) and ``mmpareto`` (:mod:`.mmpareto`). Modality dropout
(``task.modality_dropout``) and the hook protocol live in :mod:`.base`; see ``docs/balance.md``.
"""

from omnibind.training.balance import agm as agm
from omnibind.training.balance import mmpareto as mmpareto
from omnibind.training.balance import ogm_ge as ogm_ge
from omnibind.training.balance.agm import AGM as AGM
from omnibind.training.balance.base import BALANCE_METHODS as BALANCE_METHODS
from omnibind.training.balance.base import BalancePolicy as BalancePolicy
from omnibind.training.balance.base import ModalityDropout as ModalityDropout
from omnibind.training.balance.base import StepContext as StepContext
from omnibind.training.balance.base import create_policies as create_policies
from omnibind.training.balance.base import drop_modalities as drop_modalities
from omnibind.training.balance.base import modality_groups as modality_groups
from omnibind.training.balance.mmpareto import MMPareto as MMPareto
from omnibind.training.balance.ogm_ge import OGMGE as OGMGE

__all__ = [
    "AGM",
    "BALANCE_METHODS",
    "OGMGE",
    "BalancePolicy",
    "MMPareto",
    "ModalityDropout",
    "StepContext",
    "create_policies",
    "drop_modalities",
    "modality_groups",
]
