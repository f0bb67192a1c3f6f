"""Batch norm: per BN layer of every net, the gap between the batch statistics of its typical input
and its running statistics, in train and in eval mode, and the net's output gap between the two modes."""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

from lrfacebench.diagnose.faces import Faces
from lrfacebench.methods import Method
from lrfacebench.pixels import unit_to_signed

BN_FACES = 32  # faces in the one batch of the batch-norm check (its train-mode statistics)
# CR's nets -> (face set, range) of their typical input; other methods: see bn_input()
CR_BN_INPUTS = {"phi_cr": "genuine_test", "phi_cr_tilde": "artificial", "phi_sr": "artificial",
                "phi_fr": "hr", "D_sr": "hr"}


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
