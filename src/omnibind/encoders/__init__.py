"""Encoders: one modality's present rows -> ``[n, output_dim]``, then a projection to the shared width.

Importing this package registers every built-in and pretrained encoder in :data:`ENCODERS`; the
pretrained ones import their heavy libraries only when built.
"""

from omnibind.encoders import builtin as builtin
from omnibind.encoders import pretrained as pretrained
from omnibind.encoders.base import ENCODERS as ENCODERS
from omnibind.encoders.base import Encoder as Encoder
from omnibind.encoders.base import create_encoder as create_encoder
from omnibind.encoders.base import encoder_options as encoder_options
from omnibind.encoders.base import list_encoders as list_encoders
from omnibind.encoders.projection import Projection as Projection
