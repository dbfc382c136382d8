"""The ``rnnlab`` command. Each subcommand lives in its own module and is registered here."""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnlab")
def main() -> None:
    """rnnlab: the seed's RNNs, LSTMs and GRUs — train, evaluate, benchmark and compare them."""
