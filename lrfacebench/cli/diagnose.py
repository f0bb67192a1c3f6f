"""``lrfb diagnose``."""
from __future__ import annotations

from pathlib import Path

import click

from lrfacebench.cli.errors import Command


@click.command("diagnose", cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--genuine", type=click.Path(path_type=Path, file_okay=False),
              help="Genuine LR test faces: a built dataset (its test split) or a plain folder.  "
                   "[default: the sample's]")
@click.option("--reference", type=click.Path(path_type=Path, file_okay=False),
              help="HR test faces (artificial LR = their quantised DS): a built dataset (its test split) "
                   "or a plain folder.  [default: the sample's]")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Output folder.  [default: RUN/diagnose]")
@click.option("--device", default="cpu", show_default=True, help="cpu, auto, cuda or cuda:N.")
def diagnose_command(run: Path, genuine: Path | None, reference: Path | None, out: Path | None,
                     device: str) -> None:
    """Diagnose a training run RUN (finished or not; its newest checkpoint).

    \b
    Reports phi_cr's residual on genuine and artificial faces (CR), LR consistency,
    batch-norm train/eval gaps of every net and a summary of metrics.csv; writes
    diagnose.json and residuals.png.

    \b
    Examples:
      lrfb diagnose runs/cr-smoke
      lrfb diagnose runs/cr-cpu --genuine lrfb-data/widerface --out /tmp/diag
    """
    from lrfacebench.diagnose import diagnose
    from lrfacebench.diagnose.report import render

    click.echo(render(diagnose(run, genuine, reference, device, out or run / "diagnose")))
