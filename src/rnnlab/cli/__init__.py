"""The ``rnnlab`` command. Each subcommand lives in its own module and is registered here."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import click

try:
    __version__ = version("rnnlab")
except PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnlab")
def main() -> None:
    """rnnlab: the seed's RNNs, LSTMs and GRUs — train, evaluate, benchmark and compare them."""


from .bench import bench  # noqa: E402
from .compare import compare  # noqa: E402
from .eval import eval_command  # noqa: E402
from .forecast import forecast_command  # noqa: E402
from .generate import generate_command  # noqa: E402
from .train import train_command  # noqa: E402
from .unroll import unroll_command  # noqa: E402

main.add_command(train_command)
main.add_command(eval_command)
main.add_command(generate_command)
main.add_command(forecast_command)
main.add_command(compare)
main.add_command(bench)
main.add_command(unroll_command)
