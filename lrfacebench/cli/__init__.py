"""The ``lrfb`` command line: every click command lives in this package, one module per area, and
is imported only when used, so ``lrfb --help`` is instant; each command imports the library inside
its body, so ``lrfb COMMAND --help`` does not import torch either. The library below never imports
click; :mod:`lrfacebench.cli.errors` turns its errors into click errors."""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from typing import Any, Sequence

import click

from lrfacebench.signals import sigint_handled_by

# name -> ("module:attribute", one-line help shown by `lrfb --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "build-dataset": ("lrfacebench.cli.build:build_dataset_command",
                      "Detect tiny faces in photos/video (or read paired sets) and write a carded dataset."),
    "card": ("lrfacebench.cli.build:card_command", "Regenerate DATASET_CARD.md of a built dataset."),
    "methods": ("lrfacebench.cli.train:methods_command", "List every method with its presets and variants."),
    "train": ("lrfacebench.cli.train:train_command", "Train CR or a baseline into a run directory."),
    "sr": ("lrfacebench.cli.sr:sr_command", "Super-resolve face images with a zoo model, a trained run or weights."),
    "zoo": ("lrfacebench.cli.zoo:zoo_group", "List, show and verify the model zoo's trained weights and cards."),
    "evaluate": ("lrfacebench.cli.evaluate:evaluate_group",
                 "Compute one metric: fid, kid, psnr-ssim, identity, rank1."),
    "benchmark": ("lrfacebench.cli.bench:benchmark_command",
                  "Run every method on every test set and write Tables 1-7 and the complexity table."),
    "leaderboard": ("lrfacebench.cli.bench:leaderboard_group", "Merge and render leaderboards."),
    "doctor": ("lrfacebench.cli.doctor:doctor_command", "Check versions, device and weight files offline."),
    "diagnose": ("lrfacebench.cli.diagnose:diagnose_command",
                 "Diagnose a training run: phi_cr residuals, LR consistency, batch-norm gaps, loss terms."),
}


# Commands whose bodies import torch: ``main`` imports it first with Ctrl-C held back (see there).
TORCH_COMMANDS = frozenset({"build-dataset", "train", "sr", "evaluate", "benchmark", "doctor", "diagnose", "zoo"})


class LazyGroup(click.Group):
    """A group whose commands are imported from :data:`COMMANDS` only when one is run or asked for."""

    def main(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        """Click's ``main``, after importing torch when the command line runs a command that needs it.

        Ctrl-C in the middle of ``import torch`` leaves its C extensions half initialised, and the
        process then dies of a segfault or an unrelated RuntimeError. So a SIGINT during that import
        is held back and acted on when the import is done: the usual one-line ``Aborted!``.
        """
        argv = list(sys.argv[1:] if args is None else args)
        if TORCH_COMMANDS & set(argv) and not {"-h", "--help", "--version"} & set(argv):
            if _import_torch_holding_sigint():
                click.echo("Aborted!", err=True)
                sys.exit(1)
        return super().main(args, *rest, **kwargs)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (target, _) in COMMANDS.items() if _importable(target)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _import_torch_holding_sigint() -> bool:
    """Import torch with SIGINT recorded instead of raised; True when one arrived meanwhile."""
    if "torch" in sys.modules:
        return False
    received: list[int] = []
    with sigint_handled_by(lambda signum, frame: received.append(signum)):
        importlib.import_module("torch")
    return bool(received)


def _importable(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lrfacebench")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def main(verbose: int, quiet: bool) -> None:
    """lrfacebench: super-resolve genuine low-resolution faces (16x16 -> 64x64).

    \b
    Build datasets of tiny faces, train Characteristic Regularisation (CR, WACV 2020)
    and its baselines, and benchmark them into the paper's tables.

    \b
    Examples:
      lrfb build-dataset sample --out lrfb-data/sample
      lrfb sr vdsr faces/ --out sr/        # a zoo model (lrfb zoo list)
      lrfb train cr --preset smoke --out runs/cr-smoke
      lrfb benchmark --all
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
