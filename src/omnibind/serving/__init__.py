"""The HTTP service and web page over an index: ``create_app(index, settings)``; see ``docs/serving.md``."""

from omnibind.serving.app import create_app as create_app
from omnibind.serving.security import ApiKeys as ApiKeys
from omnibind.serving.security import ServeError as ServeError
from omnibind.serving.security import ServeSettings as ServeSettings
from omnibind.serving.security import load_key_file as load_key_file

__all__ = ["ApiKeys", "ServeError", "ServeSettings", "create_app", "load_key_file"]
