"""``python -m rnnlab.cli``: the ``rnnlab`` command without its console script."""

from . import main

main(prog_name="rnnlab")
