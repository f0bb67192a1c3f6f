"""``lrfb train`` and ``lrfb methods``."""
from __future__ import annotations

from pathlib import Path

import click

from lrfacebench.cli.errors import Command
from lrfacebench.training.spec import TRAINING_PRESETS, RunSpec

_CTX = {"help_option_names": ["-h", "--help"]}


def _echo_methods() -> None:
    from lrfacebench.methods import describe_methods

    for line in describe_methods():
        click.echo(line)


@click.command("methods", cls=Command, context_settings=_CTX)
def methods_command() -> None:
    """List every method with its one-line summary, presets, variants and deployed nets.

    \b
    Example:
      lrfb methods
    """
    _echo_methods()


@click.command("train", cls=Command, context_settings=_CTX)
@click.argument("method", required=False)
@click.option("--hr", type=click.Path(path_type=Path), help="HR paired set (e.g. celeba) written by lrfb build-dataset, or @sample.")
@click.option("--lr", type=click.Path(path_type=Path), help="Genuine-LR set (e.g. widerface) written by lrfb build-dataset, or @sample.")
@click.option("--split", default="train", show_default=True,
              help="Split(s) used from each set, comma-separated, or 'all' (sets without splits are used whole).")
@click.option("--preset", type=click.Choice(TRAINING_PRESETS), help="paper schedule, cpu (tens of minutes) or smoke "
              "(under a minute).  [default: paper, or the run's own on --resume]")
@click.option("--variant", help="Method variant, e.g. CR's ablations (see `lrfb methods`).")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="TOML/JSON file of config values (an [engine] table sets trainer options).")
@click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Config override, repeatable, e.g. -o lr=2e-4 -o engine.checkpoint_every=500.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Run directory.  [default: runs/<method>_<variant>_<preset>_<data>_s<seed>]")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, help="Random seed.  [default: 0, or the run's own on --resume]")
@click.option("--resume", is_flag=True, help="Continue from the newest complete checkpoint of --out.")
@click.option("--stage", help="Run (or with --resume, resume) only this stage.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config, stages and parameter counts; train nothing.")
@click.option("--deterministic", is_flag=True, help="Deterministic kernels (bit-exact resume on CPU).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile every net.")
@click.option("--init", metavar="zoo|RUN", default=None,
              help="zoo: start from the zoo's weights of METHOD (and --variant) to fine-tune them "
                   "(`lrfb zoo list`; the preset must build the same nets). RUN, with --stage NAME: start "
                   "NAME from RUN's end checkpoint of the stage before it, with this run's options "
                   "(e.g. an ablation of CR's stage 2 that shares stage 1).")
@click.option("--list", "list_", is_flag=True, help="List the methods (same as `lrfb methods`) and exit.")
def train_command(method: str | None, hr: Path | None, lr: Path | None, split: str, preset: str | None,
                  variant: str | None, config_file: Path | None, overrides: tuple[str, ...], out: Path | None,
                  device: str, seed: int | None, resume: bool, stage: str | None, dry_run: bool,
                  deterministic: bool, compile_: bool, init: str | None, list_: bool) -> None:
    """Train METHOD into a run directory: stages in order, checkpoints, resume, multi-GPU.

    METHOD is a registered method (see `lrfb methods`: cr, vdsr, srgan, cyclegan, lrgan)
    or module:Class of your own Method subclass. Without --hr/--lr it trains on the
    embedded sample (its real HR and genuine-LR faces). Under `torchrun --nproc_per_node N`
    it trains data-parallel (nccl on CUDA, gloo on CPU); rank 0 writes the run.

    \b
    Writes RUN/: config.json, env.json, log.txt, metrics.csv, samples/*.png,
    checkpoints/*.pt, final.pt (deployed weights, for `lrfb sr`), parameters.json.

    \b
    Examples:
      lrfb train cr --preset smoke --out runs/cr-smoke
      lrfb train cr --hr data/celeba --lr data/widerface --preset paper --device cuda
      lrfb train cr --variant wo_cr --dry-run
      lrfb train cr --out runs/cr-smoke --resume
      lrfb train vdsr --preset cpu --init zoo --out runs/vdsr-ft   # fine-tune the zoo's VDSR
      lrfb train cr --preset cpu -o lambda_cr_gan=0 --init runs/cr --stage stage2 --out runs/cr-no-eq8
      torchrun --nproc_per_node 4 --no-python lrfb train cr --hr ... --lr ...
    """
    if list_:
        _echo_methods()
        return
    if method is None:
        raise click.UsageError("missing METHOD (see `lrfb methods`)")
    from lrfacebench.runtime import DistContext
    from lrfacebench.training.loop import Trainer
    from lrfacebench.training.plan import describe_training_plan

    spec = RunSpec(method=method, preset=preset, variant=variant, config_file=config_file,
                   overrides=overrides, hr=hr, lr=lr, split=tuple(x.strip() for x in split.split(",")),
                   out=out, device=device, seed=seed, resume=resume, stage=stage,
                   deterministic=deterministic, compile=compile_, dry_run=dry_run, init=init)
    trainer = Trainer(spec)
    if dry_run:
        click.echo(describe_training_plan(trainer.plan(), method))
        return
    try:
        run = trainer.run()
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: continue from the newest checkpoint with --resume") from None
    if DistContext.from_env().is_main:
        click.echo(f"run: {run}")
