"""``lrfb doctor``."""
from __future__ import annotations

import click

from lrfacebench.cli.errors import Command


@click.command("doctor", cls=Command)
def doctor_command() -> None:
    """Check the installation offline: versions, device, and the hash of every weight file.

    Exits with status 1 when a required weight file is missing or corrupt.

    Example: lrfb doctor
    """
    from lrfacebench.doctor import report

    lines, failed = report()
    for line in lines:
        click.echo(line)
    if failed:
        raise SystemExit(1)
