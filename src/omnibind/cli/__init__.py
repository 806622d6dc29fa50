"""The ``omnibind`` command line: a thin map from commands to library calls."""
