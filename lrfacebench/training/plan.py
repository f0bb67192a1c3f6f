"""A :class:`~lrfacebench.training.spec.RunSpec` resolved into a :class:`TrainingPlan`: the method
class and its config (defaults <- preset <- variant <- config file <- ``-o`` overrides), the
engine settings, the face lists and the run directory, checked against the run being continued.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lrfacebench import config as cfglib
from lrfacebench import zoo
from lrfacebench.data.faces import FaceList, list_dataset, list_sample
from lrfacebench.errors import DatasetError, TrainError
from lrfacebench.methods import Method, MethodConfig, Stage, resolve_method
from lrfacebench.methods.base import LANDMARKS, LR_IDENTITY
from lrfacebench.training.spec import SAMPLE, EngineConfig, RunSpec


@dataclass
class TrainingPlan:
    """What will be trained, on what, into where."""

    cls: type[Method]
    config: MethodConfig
    config_hash: str
    engine: EngineConfig
    preset: str
    variant: str
    seed: int
    deterministic: bool
    out: Path
    lists: dict[str, FaceList]  # "hr" and/or "lr"
    data_info: dict[str, dict]
    stored_env: dict | None  # env.json of the run being continued
    # a new run starts from {"zoo": NAME, "sha256": ...} weights, or {"run": DIR, "stage": NAME, ...}
    # (that run's end checkpoint of the stage before NAME; the trainer adds "checkpoint", "sha256",
    # "config_hash" and the config keys that "differs" from it)
    init: dict | None = None


def default_out(spec: RunSpec, preset: str, variant: str, seed: int) -> Path:
    """``runs/<method>_<variant>_<preset>_<data>_s<seed>`` (BasicSR-like, one name per setting)."""
    name = spec.method.split(":")[-1].lower()
    data = "sample" if spec.hr is None and spec.lr is None else \
        "+".join(Path(d).name for d in (spec.hr, spec.lr) if d is not None)
    return Path("runs") / f"{name}_{variant}_{preset}_{data}_s{seed}"


def split_layers(config_file: Path | None, overrides: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """(method config layers, engine config layers) from a config file and ``-o`` overrides."""
    method_layers, engine_layers = [], []
    for layer in (cfglib.load_file(config_file) if config_file else {}, cfglib.parse_overrides(overrides)):
        layer = dict(layer)
        engine_layers.append(layer.pop("engine", {}))
        method_layers.append(layer)
    return method_layers, engine_layers


def face_lists(spec: RunSpec) -> dict[str, FaceList]:
    """The ``hr`` and/or ``lr`` faces of ``spec`` (both from the embedded sample when neither is given)."""
    if spec.hr is None and spec.lr is None:
        return {"hr": list_sample("hr", spec.split), "lr": list_sample("lr", spec.split)}
    out = {}
    for kind, folder in (("hr", spec.hr), ("lr", spec.lr)):
        if folder is not None:
            out[kind] = (list_sample(kind, spec.split) if str(folder) == SAMPLE
                         else list_dataset(folder, kind, spec.split))
    return out


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _stored_run(spec: RunSpec, out: Path) -> tuple[dict | None, dict | None]:
    """(config.json, env.json) of the run directory ``out`` when it is not empty, refused unless
    the spec continues it (resume, stage) or only looks (dry run)."""
    if not _non_empty(out):
        return None, None
    if not (spec.resume or spec.stage or spec.dry_run):
        raise TrainError(f"{out} exists and is not empty: pass --resume to continue it, "
                         "--stage NAME to (re)run one stage, or choose another --out")
    try:
        stored_cfg = json.loads((out / "config.json").read_text())
        stored_env = json.loads((out / "env.json").read_text())
    except (OSError, ValueError) as e:
        raise TrainError(f"{out} is not empty but is not a readable run directory ({e})") from None
    if stored_cfg.get("method") != spec.method:
        raise TrainError(f"{out} is a run of {stored_cfg.get('method')!r}, not {spec.method!r}")
    return stored_cfg, stored_env


def resolve_plan(spec: RunSpec) -> TrainingPlan:
    """Resolve method, config, data and run directory; check them against an existing run.

    Continuing a run (resume/stage) takes its preset, variant, seed, determinism and, when no
    config option is given, its config; anything given must agree with it.
    """
    cls = resolve_method(spec.method)
    out = spec.out or default_out(spec, spec.preset or "paper", spec.variant or "default", spec.seed or 0)
    stored_cfg, stored_env = _stored_run(spec, out)
    old_cfg, old_env = stored_cfg or {}, stored_env or {}
    preset = spec.preset or old_cfg.get("preset") or "paper"
    variant = spec.variant or old_cfg.get("variant") or "default"
    seed = spec.seed if spec.seed is not None else old_env.get("seed", 0)

    lists = face_lists(spec)
    method_layers, engine_layers = split_layers(spec.config_file, spec.overrides)
    if stored_cfg is not None and spec.preset is None and spec.variant is None and not any(method_layers):
        method_layers = [stored_cfg["config"]]  # continuing a run with its own config
        engine_layers = [stored_cfg.get("engine", {}), *engine_layers]
    method_layers.append(data_layer(cls, lists))
    cfg = cls.make_config(preset, variant, *method_layers)
    engine = cfglib.resolve(EngineConfig, *engine_layers)
    if spec.compile:
        engine = dataclasses.replace(engine, compile=True)
    plan = TrainingPlan(cls, cfg, cfglib.config_hash(cfg), engine, preset, variant, seed,
                        spec.deterministic or bool(old_env.get("deterministic")), out, lists,
                        {k: v.describe() for k, v in lists.items()}, stored_env,
                        _resolve_init(spec, variant, stored_cfg))
    if stored_cfg is not None and not spec.dry_run:
        _check_continuation(plan, stored_cfg, old_env)
    return plan


def data_layer(cls: type[Method], lists: dict[str, FaceList]) -> dict[str, int]:
    """The config values the trainer sets from the data: ``n_identities`` (HR identities, CentreFace
    and the like) and, for a config that has the field, ``n_lr_identities`` (genuine-LR identities,
    CSRI; other configs, and their hashes, stay as they are)."""
    out = {"n_identities": len(lists["hr"].identities)} if "hr" in lists else {}
    if "lr" in lists and any(f.name == "n_lr_identities" for f in dataclasses.fields(cls.Config)):
        out["n_lr_identities"] = len(lists["lr"].identities)
    return out


def _resolve_init(spec: RunSpec, variant: str, stored_cfg: dict | None) -> dict | None:
    """What a new run starts from: ``--init zoo`` (the zoo entry of the method's label, ``cr`` or
    ``cr:wo_cr``) or ``--init RUN --stage NAME`` (RUN's end checkpoint of the stage before NAME,
    resolved and copied by the trainer); or what a continued run started from."""
    stored = (stored_cfg or {}).get("init")
    if spec.init is None:
        return stored
    if spec.init == "zoo":
        e = zoo.entry(spec.method if variant == "default" else f"{spec.method}:{variant}", "sr")
        init = {"zoo": e.name, "sha256": e.sha256}
        same = stored == init
    else:
        init = _run_init(spec)
        same = stored is not None and all(stored.get(k) == v for k, v in init.items())
    if stored_cfg is not None and not same:
        raise TrainError(f"{spec.out} was started from {stored or 'its own initialisation'}, not {init}; "
                         "continue it without --init, or train into another --out")
    return stored if stored_cfg is not None else init


def _run_init(spec: RunSpec) -> dict[str, str]:
    """``{"run", "stage"}`` of ``--init RUN --stage NAME``, checked to name a run directory."""
    src = Path(spec.init)
    if not (src / "config.json").is_file():
        raise TrainError(f"{spec.init}: give 'zoo' (the zoo's weights of the method) or a run "
                         "directory of the method (with --stage NAME)", param="init")
    if spec.stage is None:
        raise TrainError(f"{spec.init} needs --stage NAME: the new run starts stage NAME from that "
                         "run's end checkpoint of the stage before it", param="init")
    if spec.resume:
        raise TrainError(f"{spec.init} starts a new run; --resume continues one (drop --init)", param="init")
    return {"run": str(src.resolve()), "stage": spec.stage}


def describe_init(init: dict) -> str:
    """One line on what a run started from (``config.json``'s ``init``)."""
    if "zoo" in init:
        return f"initialised from zoo model {init['zoo']} (sha256 {init['sha256'][:12]}…)"
    done = f"{init['checkpoint']}, sha256 {init['sha256'][:12]}…, " if "checkpoint" in init else ""
    differs = f"; config differs in {', '.join(init['differs']) or 'nothing'}" if "differs" in init else ""
    return f"stage {init['stage']} starts from run {init['run']} ({done}its end of the stage before){differs}"


def _check_continuation(plan: TrainingPlan, stored_cfg: dict, old_env: dict) -> None:
    """A continued run must keep its config, its data and its seed."""
    if stored_cfg.get("config_hash") != plan.config_hash:
        raise TrainError(f"the resolved config (hash {plan.config_hash[:12]}) differs from {plan.out}'s "
                         f"({str(stored_cfg.get('config_hash'))[:12]}); continue it with its own "
                         "options (or none), or train into another --out")
    for k, info in plan.data_info.items():
        old = old_env.get("data", {}).get(k, {})
        if old.get("sha256") != info["sha256"]:
            raise TrainError(f"the {k} faces ({info['source']}) differ from those {plan.out} was "
                             f"trained on ({old.get('source')})")
    if old_env.get("seed", plan.seed) != plan.seed:
        raise TrainError(f"{plan.seed} differs from the run's seed {old_env['seed']}", param="seed")


def check_needs(stages: list[Stage], lists: dict[str, FaceList]) -> None:
    """Every stream the stages need has faces: HR (and identities) and genuine LR (and identities).
    (Landmarks are detected when the faces are loaded: :func:`lrfacebench.data.landmarks.with_landmarks`.)"""
    for st in stages:
        if {"hr", "identity", "lr_artificial", LANDMARKS} & set(st.needs) and "hr" not in lists:
            raise TrainError(f"stage {st.name!r} needs HR faces: pass --hr DIR (a paired set "
                             "written by `lrfb build-dataset celeba|helen`)")
        if {"lr_genuine", LR_IDENTITY} & set(st.needs) and "lr" not in lists:
            raise TrainError(f"stage {st.name!r} needs genuine LR faces: pass --lr DIR (a set "
                             "written by `lrfb build-dataset widerface|pipa|...`)")
        if "identity" in st.needs and not lists["hr"].identities:
            raise TrainError(f"stage {st.name!r} needs identity labels, but the HR set has none")
        if LR_IDENTITY in st.needs and not lists["lr"].identities:
            raise DatasetError(f"{lists['lr'].source}: stage {st.name!r} needs identity labels of genuine LR "
                               "faces, but these have none; pass --lr a set built by `lrfb build-dataset "
                               "tinyface|survface` (its manifest gives each face an identity)", "lr")


def describe_training_plan(plan: TrainingPlan, method_spec: str) -> str:
    """What a dry run shows: method, run directory, resolved config and engine, data, stages,
    parameter counts and deployed nets (the nets are built on the CPU to count them)."""
    method = plan.cls(plan.config, "cpu")
    lines = [f"method {method_spec} ({plan.cls.summary}); preset {plan.preset}; "
             f"variant {plan.variant}; seed {plan.seed}",
             f"run directory: {plan.out}",
             f"config {plan.config_hash[:12]}:",
             json.dumps(cfglib.to_dict(plan.config), indent=2, sort_keys=True, default=str),
             "engine: " + json.dumps(dataclasses.asdict(plan.engine), sort_keys=True)]
    lines += [f"data {k}: {info['n_faces']} faces, {info['n_identities']} identities, "
              f"splits {info['splits']}, from {info['source']}" for k, info in plan.data_info.items()]
    lines.append("stages:")
    lines += [f"  {i + 1}. {st.name}: {st.iterations} iterations, batch {st.batch_size}, "
              f"needs {', '.join(st.needs)}" for i, st in enumerate(method.stages())]
    lines.append("parameters:")
    lines += [f"  {k:<12} {v:>12,d}  ({v / 1e6:.3f}M)" for k, v in method.parameter_counts().items()]
    lines.append(f"deployed nets: {', '.join(method.deployed) or '-'}")
    if plan.init:
        lines.append(describe_init(plan.init))
    return "\n".join(lines)
