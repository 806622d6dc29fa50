"""``python -m omnibind ...``: the command line, for launchers that start a module (``torchrun -m``)."""

from omnibind.cli.main import app

if __name__ == "__main__":
    app(prog_name="omnibind")
