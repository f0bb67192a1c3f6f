"""``lrfb zoo list|show|verify``."""
from __future__ import annotations

import click

from lrfacebench.cli.errors import Group


@click.group("zoo", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
def zoo_group() -> None:
    """The model zoo: trained weights shipped inside the package, each with a model card.

    \b
    A zoo name means its weights wherever a method is asked for:
      lrfb sr vdsr faces/ --out sr/          # the zoo's VDSR
      lrfb benchmark --all                   # every method's zoo weights, nothing trained
      lrfb train vdsr --preset cpu --init zoo --out runs/vdsr-ft   # fine-tune from them
    Rebuild the zoo from scratch: python scripts/build_zoo.py
    """


@zoo_group.command("list")
def list_command() -> None:
    """One line per zoo model: name, kind, method, preset, size, training time, face check, sha256."""
    from lrfacebench import zoo

    found = zoo.entries()
    if not found:
        raise click.ClickException(f"the zoo ({zoo.MODELS_DIR}) is empty: build it with scripts/build_zoo.py")
    click.echo(f"{'name':<24} {'kind':<10} {'method':<9} {'preset':<6} {'MB':>5} {'dtype':<7} {'train':>7} "
               f"{'ssim~bic':>8}  sha256")
    for name, e in found.items():
        c = e.card
        ssim = c.get("bicubic_ssim") or {}
        click.echo(f"{name:<24} {e.kind:<10} {e.method:<9} {c['preset']:<6} {c['bytes'] / 1e6:>5.1f} "
                   f"{c['dtype']:<7} {c['training']['seconds'] / 60:>5.1f}m "
                   f"{ssim['median'] if ssim else float('nan'):>8.3f}  {e.sha256[:12]}…")


@zoo_group.command("show")
@click.argument("name")
def show_command(name: str) -> None:
    """Print the model card of zoo model NAME (Markdown).

    Example: lrfb zoo show vdsr
    """
    from lrfacebench import zoo
    from lrfacebench.zoo.card import render

    click.echo(render(zoo.entry(name).card), nl=False)


@zoo_group.command("verify")
def verify_command() -> None:
    """Check every zoo file's sha256 and load it; exit status 1 if any fails.

    Example: lrfb zoo verify
    """
    from lrfacebench import zoo

    results = zoo.verify()
    for name, ok, status in results:
        click.echo(f"{name:<24} {'OK  ' if ok else 'FAIL'} {status}")
    failed = sum(not ok for _, ok, _ in results)
    if failed or not results:
        raise click.ClickException(f"{failed} of {len(results)} zoo model(s) failed" if results else "the zoo is empty")
    click.echo(f"all {len(results)} zoo model(s) verified")
