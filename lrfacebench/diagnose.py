"""``lrfb diagnose RUN``: what a (finished or unfinished) training run's nets do, in numbers.

For the newest checkpoint of RUN (every net; ``final.pt``'s deployed nets if there is none):

1. CR only: phi_cr's residual ``r = phi_cr(x) - x`` in [-1,1] units (CR's internal range) on
   genuine LR test faces, the run's genuine LR training faces and artificial faces (quantised
   ``DS`` of HR test faces): RMS and the share of r that is one fixed pattern
   (:func:`lrfacebench.metrics.residual.residual_stats`). phi_cr should leave artificial faces
   alone: ``rms`` on them below :data:`ARTIFICIAL_RMS_LIMIT`.
2. LR consistency of the whole method on genuine test faces: mean ``|DS(SR) - x|``, [0,1] units.
3. Batch norm: per BN layer of every net, the gap between the batch statistics of its input
   and its running statistics, and the net's output gap between train and eval mode, on one
   batch of :data:`BN_FACES` typical inputs.
4. ``metrics.csv``: first/last/tail-mean/min/max of every logged name per stage, and the
   spec's loss-scale check (one ``gn_*`` gradient norm > 100x another in a stage).
5. ``residuals.png``: genuine and artificial faces, phi_cr(x), the residual and the mean
   residual (the fixed pattern), both amplified (LR | SR for methods without phi_cr).

Writes ``diagnose.json`` (every number) and ``residuals.png`` into ``--out`` (RUN/diagnose).
"""
from __future__ import annotations

import copy
import csv
import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from lrfacebench import io
from lrfacebench.data import faces as facelib
from lrfacebench.data.faces import FaceList
from lrfacebench.degrade import downsample
from lrfacebench.errors import DiagnoseError
from lrfacebench.grids import grid_array
from lrfacebench.methods import Method
from lrfacebench.metrics.identity import lr_consistency
from lrfacebench.metrics.residual import residual_stats
from lrfacebench.pixels import quantise, to_unit_float, unit_to_signed
from lrfacebench.runs import FINAL, list_checkpoints, load_method

log = logging.getLogger(__name__)

ARTIFICIAL_RMS_LIMIT = 0.03  # phi_cr(x_a) vs x_a, [-1,1] units (the acceptance)
GRAD_NORM_RATIO = 100.0  # the spec's loss-scale check: no term's gradient norm > 100x another's
TAIL = 0.1  # "tail mean": mean over the last 10 % of a series' rows (at least one)
GRID_ROWS = 8  # faces per group (genuine, artificial) in residuals.png
AMPLIFY = 4.0  # residual shown as r * 4 + 0.5 ([0,1] units)
BATCH = 64  # faces per forward pass
BN_FACES = 32  # faces in the one batch of the batch-norm check (its train-mode statistics)
# CR's nets -> (face set, range) of their typical input; other methods: see bn_input()
CR_BN_INPUTS = {"phi_cr": "genuine_test", "phi_cr_tilde": "artificial", "phi_sr": "artificial",
                "phi_fr": "hr", "D_sr": "hr"}


@dataclass
class Faces:
    """The faces a diagnosis looks at, float in [0,1] on the CPU.

    genuine_test: ``(N,3,16,16)`` genuine LR test faces; genuine_train: ``(M,3,16,16)`` genuine LR training
    faces; hr: ``(K,3,64,64)`` HR test faces; artificial: ``(K,3,16,16)`` = to_uint8(DS(hr))/255.
    sources: where each set came from.
    """

    genuine_test: torch.Tensor
    genuine_train: torch.Tensor
    hr: torch.Tensor
    artificial: torch.Tensor
    sources: dict[str, str]


# ---------------------------------------------------------------------------------------------
# the run and its faces
# ---------------------------------------------------------------------------------------------
def check_run(run: Path) -> None:
    """Raise :class:`DiagnoseError` unless ``run`` is a run directory written by ``lrfb train``."""
    if not run.is_dir():
        raise DiagnoseError(f"{run}: no such run directory")
    if not (run / "config.json").is_file():
        raise DiagnoseError(f"{run}: not a training run (no config.json; expected a folder written by "
                            "`lrfb train`)")
    if not list_checkpoints(run) and not (run / FINAL).is_file():
        raise DiagnoseError(f"{run}: no checkpoint and no final.pt yet (has training started?)")


def load_run_method(run: Path, device: str) -> tuple[Method, str]:
    """(method in eval mode, what was loaded): the newest loadable checkpoint with every net, else
    ``final.pt`` (deployed nets only)."""
    for _, path in reversed(list_checkpoints(run)):
        try:
            return load_method(path, device), path.relative_to(run).as_posix()
        except ValueError:  # a broken checkpoint (load_method says so): try an older one
            continue
    return load_method(run / FINAL, device), FINAL


def face_list(folder: Path, kind: str, splits: tuple[str, ...]) -> FaceList:
    """A built dataset's ``splits`` (a folder with manifest.csv), else every image of a plain folder."""
    if (folder / "manifest.csv").is_file():
        return facelib.list_dataset(folder, kind, splits)
    return facelib.list_folder(folder, kind)


def training_genuine(run: Path) -> FaceList:
    """The run's own genuine LR training faces (env.json's ``data.lr``); the sample's training
    split when the run names none or its folder is not here."""
    env = io.read_json(run / "env.json") if (run / "env.json").is_file() else {}
    lr = env.get("data", {}).get("lr") or {}
    source, splits = lr.get("source", "sample"), tuple(lr.get("splits", ("train",)))
    if source == "sample":
        return facelib.list_sample("lr", splits)
    if (Path(source) / "manifest.csv").is_file():
        return facelib.list_dataset(Path(source), "lr", splits)
    log.warning("the run's genuine training set %s is not here: using the sample's training faces", source)
    return facelib.list_sample("lr", ("train",))


def artificial_lr(hr: torch.Tensor) -> torch.Tensor:
    """Artificial LR as the benchmark makes it: ``(N,3,64,64)`` [0,1] -> quantised DS ``(N,3,16,16)``
    [0,1]."""
    return quantise(downsample(hr))


def load_diagnosis_faces(run: Path, genuine: Path | None, reference: Path | None) -> Faces:
    """Genuine test, genuine training and HR test faces (``--genuine``/``--reference`` replace
    the sample's test faces), decoded to float in [0,1]."""
    lists = {"genuine_test": face_list(genuine, "lr", ("test",)) if genuine
             else facelib.list_sample("lr", ("test",)),
             "genuine_train": training_genuine(run),
             "hr": face_list(reference, "hr", ("test",)) if reference
             else facelib.list_sample("hr", ("test",))}
    images = {k: to_unit_float(facelib.load_faces(v).images) for k, v in lists.items()}
    return Faces(genuine_test=images["genuine_test"], genuine_train=images["genuine_train"], hr=images["hr"],
                 artificial=artificial_lr(images["hr"]),
                 sources={k: f"{v.source} ({', '.join(v.splits)})" for k, v in lists.items()})


# ---------------------------------------------------------------------------------------------
# 1-2: phi_cr's residuals, LR consistency
# ---------------------------------------------------------------------------------------------
def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device,
            batch: int = BATCH) -> torch.Tensor:
    """``fn`` over ``x`` in chunks of ``batch`` on ``device``, under no_grad; result on the CPU."""
    with torch.no_grad():
        return torch.cat([fn(chunk.to(device)).float().cpu() for chunk in x.split(batch)])


def phi_cr_signed(method: Method, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_s, phi_cr(x_s))`` for ``x`` ``(N,3,16,16)`` in [0,1]: CR's [-1,1] input and phi_cr's
    unclamped output (regulate() clamps, which would hide part of the residual)."""
    x_signed = unit_to_signed(x)
    return x_signed, batched(method.nets["phi_cr"], x_signed, method.device)


def phi_cr_residuals(method: Method, faces: Faces) -> dict[str, Any] | None:
    """residual_stats of phi_cr on each face set, [-1,1] units; None without phi_cr."""
    if "phi_cr" not in method.nets:
        return None
    out: dict[str, Any] = {"units": "[-1,1]"}
    for name in ("genuine_test", "genuine_train", "artificial"):
        s = residual_stats(*phi_cr_signed(method, getattr(faces, name)))
        out[name] = {"rms": s.rms, "fixed_share": s.fixed_share, "n": s.n}
    out["artificial_rms_limit"] = ARTIFICIAL_RMS_LIMIT
    out["artificial_rms_ok"] = out["artificial"]["rms"] < ARTIFICIAL_RMS_LIMIT
    return out


def lr_consistency_report(method: Method, faces: Faces) -> dict[str, float]:
    """Mean ``|DS(SR) - x|`` ([0,1] units) of the whole method (SR = super_resolve) on the genuine
    test faces."""
    sr = batched(method.super_resolve, faces.genuine_test, method.device)
    return {"mean": float(lr_consistency(sr, faces.genuine_test).mean()), "n": len(faces.genuine_test)}


# ---------------------------------------------------------------------------------------------
# 3: batch norm
# ---------------------------------------------------------------------------------------------
def bn_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every batch-norm layer of ``net`` that keeps running statistics."""
    return [(n, m) for n, m in net.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, biased variance) of a BN input ``(N,C,...)``, float64: what BN normalises with."""
    dims = [d for d in range(x.ndim) if d != 1]
    x = x.detach().double()
    return x.mean(dims), x.var(dims, unbiased=False)


def _gap(batch: tuple[torch.Tensor, torch.Tensor], running: tuple[torch.Tensor, torch.Tensor],
         eps: float) -> dict[str, float]:
    """Channel means of |batch mean - running mean| (raw and in running-sd units) and of
    |batch var - running var| / running var."""
    (bm, bv), (rm, rv) = batch, running
    rv = rv + eps
    d = (bm - rm).abs()
    return {"mean_gap": float(d.mean()), "mean_gap_sd": float((d / rv.sqrt()).mean()),
            "var_gap_rel": float(((bv - rv).abs() / rv).mean())}


def bn_gaps(net: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Batch-norm train/eval gaps of ``net`` on its typical input ``x`` (one batch, on the net's device).

    Per BN layer: the gap between its input's batch statistics and its running statistics when
    the whole net runs in train mode (``mean_gap``, ``mean_gap_sd``, ``var_gap_rel``) and in eval
    mode (``eval_*``: the activations inference really sees). ``output_gap`` = mean
    ``|f_train(x) - f_eval(x)|``. Runs on a deep copy, eval before train, so no running
    statistic of ``net`` (or of the copy, before it is compared) changes.
    """
    net = copy.deepcopy(net)
    layers = bn_layers(net)
    if not layers:
        return {"skipped": "no batch-norm layers"}
    running = {n: (m.running_mean.double().clone(), m.running_var.double().clone()) for n, m in layers}
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> stats of its latest input

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen[name] = _channel_stats(args[0])
        return hook

    for n, m in layers:  # hooks on the copy only, which is dropped afterwards
        m.register_forward_pre_hook(record(n))
    with torch.no_grad():
        out_eval, eval_seen = net.eval()(x), dict(seen)
        out_train, train_seen = net.train()(x), dict(seen)
    rows = []
    for n, m in layers:
        row = {"layer": n, **_gap(train_seen[n], running[n], m.eps)}
        row.update({f"eval_{k}": v for k, v in _gap(eval_seen[n], running[n], m.eps).items()})
        rows.append(row)
    return {"layers": rows, "output_gap": float((out_train.float() - out_eval.float()).abs().mean()),
            "n": len(x)}


def bn_input(method: Method, name: str, faces: Faces) -> tuple[str, torch.Tensor] | str:
    """(description, batch) of net ``name``'s typical input, or why there is none.

    CR (:data:`CR_BN_INPUTS`): phi_cr genuine, phi_cr_tilde and phi_sr artificial LR, phi_fr and
    D_sr HR faces, all in [-1,1]. Other methods: nets whose first conv takes 3 channels get the
    genuine faces in [0,1] (the Method interface's range; a net that works in [-1,1] sees a
    shifted input, so treat its gaps as indicative).
    """
    if method.name == "cr":
        if name not in CR_BN_INPUTS:
            return "no typical image input"
        which = CR_BN_INPUTS[name]
        return f"{which} [-1,1]", unit_to_signed(getattr(faces, which))
    first = next((m for m in method.nets[name].modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first.in_channels != 3:
        return "first layer is not a 3-channel conv"
    return "genuine_test [0,1]", faces.genuine_test


def bn_training_notes(method: Method) -> dict[str, str]:
    """Nets whose batch norm CR's config keeps in eval mode while training (``cr_bn``,
    ``sr_bn_stage2``): their train-mode gap never occurs there, only the eval columns apply."""
    config = method.config
    notes = {}
    if getattr(config, "cr_bn", None) == "fixed":
        notes.update(dict.fromkeys(("phi_cr", "phi_cr_tilde"), "trained on fixed statistics (cr_bn=fixed)"))
    if getattr(config, "sr_bn_stage2", None) == "frozen":
        notes["phi_sr"] = "stage 2 trains it on running statistics (sr_bn_stage2=frozen)"
    return {k: v for k, v in notes.items() if k in method.nets}


def bn_report(method: Method, faces: Faces) -> dict[str, dict[str, Any]]:
    """:func:`bn_gaps` of every net of ``method`` (plus ``note`` from :func:`bn_training_notes`);
    ``{"skipped": reason}`` where it cannot run."""
    out = {}
    notes = bn_training_notes(method)
    for name, net in method.nets.items():
        if not bn_layers(net):
            out[name] = {"skipped": "no batch-norm layers"}
            continue
        given = bn_input(method, name, faces)
        if isinstance(given, str):
            out[name] = {"skipped": given}
            continue
        try:
            out[name] = {"input": given[0], **bn_gaps(net, given[1][:BN_FACES].to(method.device))}
            if name in notes:
                out[name]["note"] = notes[name]
        except Exception as e:  # noqa: BLE001 - a net that does not take this input is skipped
            out[name] = {"skipped": f"forward failed: {type(e).__name__}: {e}"}
    return out


# ---------------------------------------------------------------------------------------------
# 4: metrics.csv
# ---------------------------------------------------------------------------------------------
def read_metrics(path: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``stage -> name -> [(step, value), ...]`` in file order; half-written rows are skipped."""
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step, value = int(row["step"]), float(row["value"])
            except (TypeError, ValueError):
                continue
            series.setdefault(row["stage"], {}).setdefault(row["name"], []).append((step, value))
    return series


def kind_of(name: str) -> str:
    """``grad_norm`` (gn_*), ``probe`` (probe_*), ``loss`` (L_*) or ``other`` (accuracies, img_per_s)."""
    for prefix, kind in (("gn_", "grad_norm"), ("probe_", "probe"), ("L_", "loss")):
        if name.startswith(prefix):
            return kind
    return "other"


def summarise(points: list[tuple[int, float]]) -> dict[str, float | int | str]:
    """first, last (and its step), mean of the last :data:`TAIL` of the rows, min, max of a series."""
    values = [v for _, v in points]
    tail = values[-max(1, math.ceil(TAIL * len(values))):]
    return {"n": len(values), "first": values[0], "last": values[-1], "last_step": points[-1][0],
            "tail_mean": sum(tail) / len(tail), "min": min(values), "max": max(values)}


def split_grad_norm(name: str, nets: Sequence[str]) -> tuple[str, str | None]:
    """``gn_<term>_<net>`` -> (term, net), the longest net of ``nets`` that ends the name; (rest, None)
    when none does."""
    rest = name[len("gn_"):]
    for net in sorted(nets, key=len, reverse=True):
        if rest.endswith(f"_{net}"):
            return rest[: -len(net) - 1], net
    return rest, None


def grad_norm_flags(stage: str, names: dict[str, dict[str, Any]],
                    nets: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The spec's loss-scale check for one stage: pairs of terms whose last gradient norms on the
    same net (``gn_<term>_<net>``) differ more than :data:`GRAD_NORM_RATIO`-fold, largest first.
    A norm of 0 means the term does not reach that net and is left out."""
    by_net: dict[str | None, dict[str, float]] = {}
    for name, s in names.items():
        if kind_of(name) == "grad_norm" and s["last"] > 0:
            term, net = split_grad_norm(name, nets)
            by_net.setdefault(net, {})[term] = s["last"]
    flags = [{"stage": stage, "net": net, "large": big, "small": small, "ratio": last[big] / last[small]}
             for net, last in by_net.items() for big, small in itertools.permutations(last, 2)
             if last[big] > GRAD_NORM_RATIO * last[small]]
    return sorted(flags, key=lambda f: -f["ratio"])


def metrics_summary(path: Path, nets: Sequence[str] = ()) -> dict[str, Any]:
    """Summary of a run's ``metrics.csv``: ``stages -> name -> summarise() + kind``, and the
    gradient-norm flags of every stage (``nets``: the method's net names, to group ``gn_*`` by
    net). Empty when the file does not exist yet."""
    if not path.is_file():
        return {"stages": {}, "grad_norm_flags": []}
    stages = {stage: {name: {**summarise(points), "kind": kind_of(name)} for name, points in names.items()}
              for stage, names in read_metrics(path).items()}
    flags = [f for stage, names in stages.items() for f in grad_norm_flags(stage, names, nets)]
    return {"stages": stages, "grad_norm_flags": flags}


# ---------------------------------------------------------------------------------------------
# 5: residual grid
# ---------------------------------------------------------------------------------------------
def _amplified(r: torch.Tensor) -> torch.Tensor:
    """A residual in [0,1] units shown as ``r * AMPLIFY + 0.5`` (grid_array clamps to [0,1])."""
    return r * AMPLIFY + 0.5


def _phi_cr_rows(method: Method, x: torch.Tensor) -> list[torch.Tensor]:
    """The grid's four columns for the first :data:`GRID_ROWS` faces of ``x`` ``(N,3,16,16)`` [0,1]:
    x, regulate(x), residual x4 and the mean residual of all N faces x4 ([0,1] units)."""
    x_signed, y_signed = phi_cr_signed(method, x)
    r = (y_signed - x_signed) / 2  # [-1,1] -> [0,1] units
    k = min(GRID_ROWS, len(x))
    return [x[:k], batched(method.regulate, x[:k], method.device), _amplified(r[:k]),
            _amplified(r.mean(0, keepdim=True)).expand(k, -1, -1, -1)]


def _sr_rows(method: Method, x: torch.Tensor, artificial: bool) -> list[torch.Tensor]:
    """LR and SR columns for the first :data:`GRID_ROWS` faces of ``x``."""
    lr = x[:GRID_ROWS]
    return [lr, batched(lambda b: method.super_resolve(b, artificial=artificial), lr, method.device)]


def residual_grid(method: Method, faces: Faces) -> np.ndarray:
    """RGB uint8 grid: rows = :data:`GRID_ROWS` genuine then as many artificial test faces.

    With phi_cr, columns input | regulate(x) | residual x4 | mean residual of the whole set x4
    (the fixed pattern); otherwise LR | SR (the artificial rows through the artificial path).
    """
    if "phi_cr" in method.nets:
        titles = ("input", "phi_cr(x)", "r x4", "mean r x4")
        groups = [_phi_cr_rows(method, faces.genuine_test), _phi_cr_rows(method, faces.artificial)]
    else:
        titles = ("LR", "SR")
        groups = [_sr_rows(method, faces.genuine_test, False), _sr_rows(method, faces.artificial, True)]
    return grid_array([(t, torch.cat(column)) for t, column in zip(titles, zip(*groups))])


# ---------------------------------------------------------------------------------------------
# the diagnosis
# ---------------------------------------------------------------------------------------------
def diagnose(run: Path, genuine: Path | None = None, reference: Path | None = None, device: str = "cpu",
             out: Path | None = None) -> dict[str, Any]:
    """Every number of a diagnosis of ``run`` (see the module docstring) as one JSON-able dict;
    with ``out``, also writes ``out/diagnose.json`` and ``out/residuals.png``."""
    run = Path(run)
    check_run(run)
    method, weights = load_run_method(run, device)
    faces = load_diagnosis_faces(run, genuine, reference)
    config = io.read_json(run / "config.json")
    report = {"run": str(run), "method": config.get("method"), "variant": config.get("variant"),
              "preset": config.get("preset"), "weights": weights, "finished": (run / FINAL).is_file(),
              "nets": sorted(method.nets), "faces": {k: {"source": v, "n": len(getattr(faces, k))}
                                                     for k, v in faces.sources.items()},
              "phi_cr_residual": phi_cr_residuals(method, faces),
              "lr_consistency": lr_consistency_report(method, faces),
              "batch_norm": bn_report(method, faces),
              "metrics": metrics_summary(run / "metrics.csv", list(method.nets))}
    report["faces"]["artificial"] = {"source": "to_uint8(DS(hr))", "n": len(faces.artificial)}
    if out is not None:
        io.write_png(out / "residuals.png", residual_grid(method, faces))
        report["files"] = {"json": str(out / "diagnose.json"), "png": str(out / "residuals.png")}
        io.write_json(out / "diagnose.json", report)
    return report


# ---------------------------------------------------------------------------------------------
# the printed report
# ---------------------------------------------------------------------------------------------
def _num(v: float | int | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _render_residuals(res: dict[str, Any] | None) -> list[str]:
    if res is None:
        return ["phi_cr residual: not applicable (the method has no phi_cr)"]
    lines = ["phi_cr residual r = phi_cr(x) - x, [-1,1] units",
             f"  {'faces':<13} {'n':>5} {'rms':>9} {'fixed share':>12}"]
    labels = {"genuine_test": "genuine test", "genuine_train": "genuine train", "artificial": "artificial"}
    for key, label in labels.items():
        s = res[key]
        lines.append(f"  {label:<13} {s['n']:>5} {s['rms']:>9.4f} {s['fixed_share']:>12.3f}")
    verdict = "ok" if res["artificial_rms_ok"] else "TOO LARGE"
    lines.append(f"  phi_cr(x_a) vs x_a RMS {res['artificial']['rms']:.4f} "
                 f"(limit {res['artificial_rms_limit']}): {verdict}")
    return lines


def _render_bn(bn: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["batch norm: input batch statistics vs running statistics, channel means "
             "(train mode | eval mode)",
             f"  {'layer':<28} {'mean gap':>9} {'gap/sd':>8} {'var rel':>8} | {'gap/sd':>8} {'var rel':>8}"]
    for name, r in bn.items():
        if "skipped" in r:
            lines.append(f"  {name}: skipped: {r['skipped']}")
            continue
        note = f"; {r['note']}" if "note" in r else ""
        lines.append(f"  {name} ({r['input']}, {r['n']} faces): output gap mean|f_train - f_eval| "
                     f"{r['output_gap']:.4g}{note}")
        lines += [f"    {x['layer']:<26} {x['mean_gap']:>9.4f} {x['mean_gap_sd']:>8.3f} "
                  f"{x['var_gap_rel']:>8.3f} | {x['eval_mean_gap_sd']:>8.3f} {x['eval_var_gap_rel']:>8.3f}"
                  for x in r["layers"]]
    return lines


def _render_metrics(metrics: dict[str, Any]) -> list[str]:
    if not metrics["stages"]:
        return ["metrics.csv: no rows yet"]
    w = max(len(n) for names in metrics["stages"].values() for n in names)
    lines = [f"metrics.csv (tail = mean of the last {TAIL:.0%} of rows)",
             f"  {'stage':<11} {'name':<{w}} {'n':>4} {'first':>10} {'last':>10} {'tail':>10} "
             f"{'min':>10} {'max':>10}"]
    for stage, names in metrics["stages"].items():
        lines += [f"  {stage:<11} {name:<{w}} {s['n']:>4} {_num(s['first']):>10} {_num(s['last']):>10} "
                  f"{_num(s['tail_mean']):>10} {_num(s['min']):>10} {_num(s['max']):>10}"
                  for name, s in names.items()]
    gn = [n for names in metrics["stages"].values() for n in names if kind_of(n) == "grad_norm"]
    if not gn:
        lines.append("  loss-scale check: no gradient norms (gn_*) logged")
    elif not metrics["grad_norm_flags"]:
        lines.append(f"  loss-scale check: no term's last gradient norm is > {GRAD_NORM_RATIO:g}x another's "
                     "on the same net")
    lines += [f"  loss-scale check FAILED in {f['stage']}: on {f['net'] or 'the shared nets'} the "
              f"gradient norm of {f['large']} is {f['ratio']:.3g}x that of {f['small']}"
              for f in metrics["grad_norm_flags"]]
    return lines


def render(report: dict[str, Any]) -> str:
    """The human-readable report of :func:`diagnose`'s dict."""
    faces = ", ".join(f"{k} {v['n']} from {v['source']}" for k, v in report["faces"].items())
    lr = report["lr_consistency"]
    lines = [f"run {report['run']}: {report['method']} (variant {report['variant']}, preset "
             f"{report['preset']}), {'finished' if report['finished'] else 'unfinished'}; "
             f"weights {report['weights']}",
             f"faces: {faces}", "", *_render_residuals(report["phi_cr_residual"]), "",
             f"LR consistency mean |DS(SR) - x| on genuine test faces, [0,1] units: {lr['mean']:.4f} "
             f"({lr['n']} faces)", "",
             *_render_bn(report["batch_norm"]), "", *_render_metrics(report["metrics"])]
    if "files" in report:
        lines += ["", f"wrote {report['files']['json']} and {report['files']['png']}"]
    return "\n".join(lines)
