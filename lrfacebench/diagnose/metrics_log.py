"""A run's ``metrics.csv`` summarised: first/last/tail-mean/min/max of every logged name per stage,
and the spec's loss-scale check (one ``gn_*`` gradient norm > 100x another on the same net)."""
from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path
from typing import Any, Sequence

GRAD_NORM_RATIO = 100.0  # the spec's loss-scale check: no term's gradient norm > 100x another's
TAIL = 0.1  # "tail mean": mean over the last 10 % of a series' rows (at least one)


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
