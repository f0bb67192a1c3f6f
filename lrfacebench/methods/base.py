"""The Method interface shared by CR and every baseline (bicubic included).

The trainer, ``lrfb sr`` and the benchmark harness only ever talk to this interface; nothing
outside a method's own module knows anything method-specific.

Value ranges: every tensor that crosses this interface is float in [0,1]. A method that
works in [-1,1] internally (CR, SRGAN, ...) converts inside its own module.
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from lrfacebench import config as cfglib

STREAMS = ("hr", "identity", "lr_artificial", "lr_genuine")
LANDMARKS = "landmarks"  # a stream only the stages that name it in ``needs`` get (not in STREAMS)
LR_IDENTITY = "lr_identity"  # likewise: identities of genuine LR faces (CSRI's genuine branch)


@dataclass
class Batch:
    """One training step's data, on the training device.

    hr:            (B,3,64,64) float in [0,1], HR faces (CelebA-like).
    identity:      (B,) int64 identity index of each ``hr`` face in [0, n_identities), -1 if unknown.
    lr_artificial: (B,3,16,16) float in [0,1], ``DS(hr)`` quantised to uint8 levels (paired with ``hr``).
    lr_genuine:    (B,3,16,16) float in [0,1], genuine LR faces, unpaired with ``hr``.
    landmarks:     (B,5,2) float32, MTCNN's 5 landmarks of each ``hr`` face, ``(x, y)`` in HR pixels
                   (pixel i covers [i, i+1)), order left eye, right eye, nose, left and right mouth
                   corner (left = image left; mirrored with the face). A stage that needs them draws
                   only HR faces on which MTCNN found landmarks.
    lr_identity:   (B,) int64 identity index of each ``lr_genuine`` face in [0, n_lr_identities), an
                   index into the genuine-LR set's own identities (other people than the HR set's). A
                   stage that needs it draws only genuine LR faces that have an identity.
    Streams a stage does not need (see :attr:`Stage.needs`) may be ``None``.
    """

    hr: torch.Tensor | None = None
    identity: torch.Tensor | None = None
    lr_artificial: torch.Tensor | None = None
    lr_genuine: torch.Tensor | None = None
    landmarks: torch.Tensor | None = None
    lr_identity: torch.Tensor | None = None


@dataclass(frozen=True)
class Stage:
    """A training stage: its name, how many optimisation steps it runs, and the data it needs
    (names of :class:`Batch` fields; :data:`LANDMARKS` and :data:`LR_IDENTITY` only when named)."""

    name: str
    iterations: int
    needs: tuple[str, ...] = STREAMS
    batch_size: int = 16


@dataclass
class MethodConfig:
    """Fields every method config has. Subclasses add their own; defaults are the paper's."""

    variant: str = "default"
    n_identities: int = 0  # set by the trainer from the HR data (CentreFace, SICNN, ...)
    # Training faces are mirrored with probability 1/2 (HR before DS, genuine LR independently).
    # Fill-in: no paper of the benchmark states its augmentation; BasicSR's default for faces.
    hflip: bool = True


class Method(abc.ABC):
    """A face super-resolution method, 16x16 -> 64x64.

    Subclasses set the class attributes, build their networks and optimisers in ``__init__``
    (into :attr:`nets` and :attr:`optimizers`), and implement :meth:`stages`,
    :meth:`train_step` and :meth:`super_resolve`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for ``lrfb methods``
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"paper": {}, "cpu": {}, "smoke": {}}
    variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {"default": {}}
    deployed: ClassVar[tuple[str, ...]] = ()  # names in ``nets`` used to super-resolve genuine LR

    def __init__(self, config: MethodConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    # ----- configuration -------------------------------------------------------------------
    @classmethod
    def make_config(cls, preset: str = "paper", variant: str = "default",
                    *layers: Mapping[str, Any]) -> MethodConfig:
        """Defaults <- preset <- variant <- each extra layer (config file, CLI overrides)."""
        if preset not in cls.presets:
            raise ValueError(f"{cls.name}: unknown preset {preset!r}; choose from {sorted(cls.presets)}")
        if variant not in cls.variants:
            raise ValueError(f"{cls.name}: unknown variant {variant!r}; choose from {sorted(cls.variants)}")
        return cfglib.resolve(cls.Config, cls.presets[preset], cls.variants[variant],
                              {"variant": variant}, *layers)

    # ----- training ------------------------------------------------------------------------
    @abc.abstractmethod
    def stages(self) -> list[Stage]:
        """The training stages in order (empty for methods that need no training)."""

    @abc.abstractmethod
    def train_step(self, stage: str, batch: Batch, step: int) -> dict[str, float]:
        """Run one optimisation step of ``stage``; return every loss term by name (floats)."""

    def zero_grad(self) -> None:
        """Clear every net's gradients (set to None), so each backward pass starts from nothing."""
        for net in self.nets.values():
            net.zero_grad(set_to_none=True)

    # ----- inference -----------------------------------------------------------------------
    @abc.abstractmethod
    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        """``(N,3,16,16)`` float in [0,1] -> ``(N,3,64,64)`` float in [0,1] (clamped).

        ``artificial=True`` means the input is ``DS(hr)`` (Table 3); methods whose genuine-LR
        path differs (CR skips phi_cr) honour it. Called in eval mode under ``torch.no_grad``.
        """

    def regulate(self, lr: torch.Tensor) -> torch.Tensor | None:
        """LR-space regulation of genuine LR, ``(N,3,16,16)`` -> same, in [0,1]; ``None`` when the
        method has none (only CR's phi_cr has one; Table 5 uses it)."""
        return None

    def probe(self, lr_genuine: torch.Tensor | None, lr_artificial: torch.Tensor | None) -> dict[str, float]:
        """Diagnostics on fixed faces, ``(N,3,16,16)`` float in [0,1] each (genuine LR, and
        quantised DS of HR faces), that the trainer logs at sample intervals (names ``probe_*``);
        empty by default. Called in eval mode under ``torch.no_grad``."""
        return {}

    # ----- state ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Method":
        for net in self.nets.values():
            net.train(mode)
        return self

    def eval(self) -> "Method":
        return self.train(False)

    def to(self, device: torch.device | str) -> "Method":
        self.device = torch.device(device)
        for net in self.nets.values():
            net.to(self.device)
        return self

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: nets, optimisers and :meth:`extra_state`."""
        return {"nets": {k: v.state_dict() for k, v in self.nets.items()},
                "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
                "extra": self.extra_state()}

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        for k, sd in state["nets"].items():
            self.nets[k].load_state_dict(sd, strict=strict)
        for k, sd in state.get("optimizers", {}).items():
            if k in self.optimizers:
                self.optimizers[k].load_state_dict(sd)
        self.load_extra_state(state.get("extra", {}))

    def external_nets(self) -> dict[str, str]:
        """``{net: "RUN[:NET]"}``: nets whose weights a new run takes from another run's net (e.g.
        SICNN's frozen recogniser) before training; the trainer loads each with
        :meth:`load_external` (a checkpoint of this run, when it continues, replaces them later).
        Empty by default."""
        return {}

    def load_external(self, net: str, state: Mapping[str, torch.Tensor]) -> None:
        """Load ``state`` (another run's net, see :meth:`external_nets`) into ``self.nets[net]``."""
        self.nets[net].load_state_dict(state)

    def extra_state(self) -> dict[str, Any]:
        """Tensors/numbers beyond nets and optimisers (e.g. an image pool). Override if needed."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`extra_state`."""

    def deployed_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """Weights of the deployed modules only (what ``lrfb sr`` and the benchmark load)."""
        return {k: self.nets[k].state_dict() for k in self.deployed}

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per net, plus ``deployed`` and ``trained`` totals, counted from the code."""
        counts = {k: sum(p.numel() for p in v.parameters()) for k, v in self.nets.items()}
        counts["deployed"] = sum(counts[k] for k in self.deployed)
        counts["trained"] = sum(v for k, v in counts.items() if k != "deployed")
        return counts

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "config": dataclasses.asdict(self.config),
                "parameters": self.parameter_counts(),
                "stages": [dataclasses.asdict(s) for s in self.stages()]}
