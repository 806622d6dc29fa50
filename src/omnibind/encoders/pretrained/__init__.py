"""Wrappers of pretrained backbones; importing this package registers them (their libraries load lazily)."""

from omnibind.encoders.pretrained import efficientnet_lite as efficientnet_lite
from omnibind.encoders.pretrained import hf as hf
from omnibind.encoders.pretrained import open_clip as open_clip
from omnibind.encoders.pretrained import sentence_transformers as sentence_transformers
from omnibind.encoders.pretrained import timm as timm
