"""Small encoders that train on a CPU in minutes; importing this package registers them."""

from omnibind.encoders.builtin import bag_of_tokens as bag_of_tokens
from omnibind.encoders.builtin import conv as conv
from omnibind.encoders.builtin import mlp as mlp
from omnibind.encoders.builtin import transformer as transformer
