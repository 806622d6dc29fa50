"""Fusion heads: class logits from the embeddings of whichever modalities an item has.

Importing this package registers every head in ``FUSION_HEADS``: ``late``, ``attention``, ``sequential``
(MultiModN) and ``experts``. :class:`~omnibind.fusion.classifier.Classifier` (encoders + head) lives in
``omnibind.fusion.classifier`` and is imported from there, so that the config can import this package.
"""

from omnibind.fusion import cross_attention as cross_attention
from omnibind.fusion import experts as experts
from omnibind.fusion import late as late
from omnibind.fusion import sequential as sequential
from omnibind.fusion.base import FUSION_HEADS as FUSION_HEADS
from omnibind.fusion.base import FusionHead as FusionHead
from omnibind.fusion.base import FusionOutput as FusionOutput
from omnibind.fusion.base import create_head as create_head
from omnibind.fusion.base import list_heads as list_heads

__all__ = ["FUSION_HEADS", "FusionHead", "FusionOutput", "create_head", "list_heads"]
