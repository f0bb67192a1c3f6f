"""What one ``lrfb train`` invocation asks for: :class:`RunSpec` (the Python API mirrors the CLI)
and the trainer's own settings :class:`EngineConfig`. Plain data; imports no torch."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

TRAINING_PRESETS = ("paper", "cpu", "smoke")
SAMPLE = "@sample"  # hr/lr value naming the embedded sample's faces


@dataclass
class EngineConfig:
    """Trainer settings (``-o engine.KEY=VALUE`` or an ``[engine]`` table in ``--config``).

    They do not change what is learned, except ``amp``/``compile`` (numerics on CUDA).
    """

    log_every: int = 50  # metrics.csv / log.txt row every N steps (and the last step of a stage)
    sample_every: int = 2000  # sample grid every N steps (and at the end of each stage)
    checkpoint_every: int = 1000  # periodic checkpoint every N steps (and at the end of each stage)
    keep_checkpoints: int = 2  # periodic checkpoints kept per stage (dropped when the stage ends)
    keep_stage_checkpoints: bool = True  # False: only the newest end-of-stage checkpoint is kept
    # (saves disk; --resume still works, but an earlier stage can no longer be re-run with --stage)
    n_samples: int = 8  # faces (rows) in a sample grid
    amp: str = "bf16"  # CUDA only: "bf16" autocast or "none"
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile every net (in place; state_dict keys unchanged)


@dataclass
class RunSpec:
    """Everything one training invocation asks for.

    ``hr``/``lr``: built dataset folders or :data:`SAMPLE` (both ``None``: the embedded sample);
    ``init``: ``"zoo"`` starts a new run from the zoo's weights of the method (and variant), to
    fine-tune them; a run directory (with ``stage``) starts that stage from the run's end
    checkpoint of the stage before it, e.g. an ablation of CR's stage 2 that shares stage 1;
    ``dry_run``: resolve the plan only (an existing run directory is then not refused).
    """

    method: str  # registered name (cr, vdsr, ...) or "module:Class" of a Method subclass
    preset: str | None = None  # None -> "paper", or the run's preset on resume/stage
    variant: str | None = None
    config_file: Path | None = None
    overrides: Sequence[str] = ()
    hr: Path | None = None
    lr: Path | None = None
    split: Sequence[str] = ("train",)
    out: Path | None = None
    device: str = "auto"
    seed: int | None = None  # None -> 0, or the run's seed on resume/stage
    resume: bool = False
    stage: str | None = None
    deterministic: bool = False
    compile: bool = False
    dry_run: bool = False
    init: str | None = None  # "zoo", a run directory, or None (nets initialised by the method)

    def __post_init__(self) -> None:
        for name in ("config_file", "hr", "lr", "out"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        self.split = tuple(self.split)
