"""Modality kinds: how a value of each kind is loaded, validated, transformed and batched.

Importing this package registers every built-in kind in :data:`KINDS`.
"""

from omnibind.data.kinds import audio as audio
from omnibind.data.kinds import embedding as embedding
from omnibind.data.kinds import image as image
from omnibind.data.kinds import signal as signal
from omnibind.data.kinds import tabular as tabular
from omnibind.data.kinds import text as text
from omnibind.data.kinds.base import KINDS as KINDS
from omnibind.data.kinds.base import ModalityKind as ModalityKind
from omnibind.data.kinds.base import create_kind as create_kind
