"""``rnnlab compare``: train RNN, LSTM and GRU under one protocol and write the measured comparison."""

from __future__ import annotations

import click

from ..compare import run_comparison
from ..compare.browser import check_page


@click.command("compare")
@click.option("--profile", type=click.Choice(["tiny", "quick", "standard", "full"]), default="quick", show_default=True,
              help="Scale: quick (default; about 10 minutes on 2 busy cores, no yardsticks), standard (the project's "
                   "report: quick's sections, a char-LM at H = 256 and the published yardsticks; at most 60 minutes on "
                   "2 quiet cores from an empty cache), full (5 seeds, the larger ladder and the yardsticks at their "
                   "sources' budgets; days on 2 cores, for bigger machines), tiny (a structural check for the tests).")
@click.option("--full", "full", is_flag=True, help="Shorthand for --profile full.")
@click.option("--out", default="report", show_default=True, type=click.Path(file_okay=False), help="Where to write the report.")
@click.option("--cache", default="runs/compare", show_default=True, type=click.Path(file_okay=False),
              help="Run cache: finished runs are reused, so a rerun trains only what is missing.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Training processes at once (default: the profile's).")
@click.option("--check-html", is_flag=True, help="Afterwards, open report.html in headless Chromium and fail on errors.")
@click.option("--no-train", is_flag=True, help="Write the report from the run cache alone; yardstick runs missing from it "
                                               "are reported as not trained (every other run must be cached).")
def compare(profile: str, full: bool, out: str, cache: str, jobs: int | None, check_html: bool, no_train: bool) -> None:
    """Train the three cells, measure them and write OUT/report.md and OUT/report.html."""
    try:
        paths = run_comparison("full" if full else profile, out=out, cache=cache, jobs=jobs, train=not no_train)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if check_html:
        result = check_page(paths["html"])
        click.echo(f"chromium: {result.loaded}/{result.images} images loaded, {len(result.errors)} script errors, "
                   f"{len(result.console)} console messages")
        if not result.ok:
            raise click.ClickException(f"report.html did not render cleanly: {result.errors + result.console}")
