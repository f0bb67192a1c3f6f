"""Model cards of the zoo: the licences a model inherits from the sample faces it was trained on,
and the Markdown rendering of a card (``STEM.md`` beside ``STEM.json``; ``lrfb zoo show``).

A card is the JSON dict ``scripts/build_zoo.py`` writes: the entry fields (``name``, ``method``,
``kind``, ``net``, ``weights``, ``sha256``), then ``nets``, ``summary``, ``variant``, ``preset``,
``seed``, ``overrides``, ``config_hash``, ``parameters``, ``bytes``, ``dtype``, ``fp16_gap`` and
``fp16_check`` (:mod:`lrfacebench.zoo.checks`), ``source_sha256`` (the run's ``final.pt``),
``training`` (run, seconds, device, torch threads, start, commit, versions, sessions), ``data``
(per stream used: source, faces, identities, splits, sha256), ``licences`` (licence -> number of
training files), ``metrics`` (rows next to bicubic with a paired bootstrap interval),
``bicubic_ssim`` (the face check), ``intended_use``, ``limits`` and ``complete`` (false while the
build is still measuring it).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable

import pandas as pd

from lrfacebench.data.faces import SAMPLE_DIR

SAMPLE_TERMS = ("The training faces are real, identifiable people (biometric data): research and "
                "testing of this toolkit only; do not use the model to identify, track or profile anyone "
                "(lrfacebench/sample/README.md, \"Restrictions\").")


def sample_licences(names: Iterable[str]) -> dict[str, int]:
    """Licence -> number of files among ``names`` (paths of the embedded sample, as in its
    ``provenance.csv``; e.g. the names of the faces a model was trained on)."""
    rows = pd.read_csv(SAMPLE_DIR / "provenance.csv", dtype=str, keep_default_na=False)
    licence = dict(zip(rows["path"], rows["license"]))
    return dict(sorted(Counter(licence[n] for n in names).items()))


def _num(x: Any, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:{'+' if sign else ''}.{4 if abs(x) < 1 else 2}f}"


def _metrics_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| set | metric | N | this model | bicubic | Δ vs bicubic [95 % paired bootstrap] |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        better = "higher" if r["higher_is_better"] else "lower"
        interval = f"{_num(r['delta'], sign=True)} [{_num(r['ci_low'], sign=True)}, {_num(r['ci_high'], sign=True)}]"
        out.append(f"| {r['dataset']} | {r['metric']} ({better} is better) | {r['n']} | "
                   f"{_num(r['value'])} ± {_num(r['std'])} | {_num(r['bicubic'])} | {interval} |")
    return out


def render(card: dict[str, Any]) -> str:
    """The Markdown model card of ``card`` (a zoo entry's JSON)."""
    t, d = card["training"], card["data"]
    lines = [f"# Model card: `{card['name']}`", "",
             f"{card['summary']}", "",
             "## Weights", "",
             f"- file `{card['weights']}`, {card['bytes'] / 1e6:.2f} MB, {card['dtype']}, sha256 `{card['sha256']}`",
             f"- method `{card['method']}`, variant `{card['variant']}`, "
             + (f"recogniser net `{card['net']}`" if card["kind"] == "recognizer" else "deployed nets "
                + ", ".join(f"`{n}`" for n in card["nets"])) + f"; {card['parameters']:,} parameters",
             f"- fp16 check: {card['fp16_check']}",
             "", "## Training", "",
             f"- preset `{card['preset']}`"
             + "".join(f" `-o {o}`" for o in card.get("overrides", ()))
             + f", seed {card['seed']}, config sha256 `{card['config_hash']}`",
             f"- {t['seconds'] / 60:.1f} min of training on `{t['device']}` ({t['torch_threads']} torch "
             f"thread(s)), started {t['started']}",
             f"- lrfacebench {t['lrfacebench']}, commit `{t['commit'] or 'unknown'}`, torch {t['torch']}",
             f"- rebuild: `python scripts/build_zoo.py --only {card['name']} --preset {card['preset']}`",
             "", "## Data", ""]
    lines += [f"- {stream}: {info['n_faces']} faces, {info['n_identities']} identities, splits "
              f"{', '.join(info['splits'])}, from the embedded sample (sha256 `{info['sha256'][:12]}…`)"
              for stream, info in d.items()]
    lines += ["", "Licences inherited from the training files (files per licence):", ""]
    lines += [f"- {lic}: {n}" for lic, n in card["licences"].items()]
    lines += ["", SAMPLE_TERMS, "", "## Held-out evaluation", ""]
    s = card.get("bicubic_ssim")
    if s:
        lines += [f"Face check: per-image Y-SSIM between this model's output and the bicubic up-sampling of "
                  f"the same input, on the sample's {s['n']} genuine test faces: median {s['median']:.3f} "
                  f"(the zoo requires >= {s['threshold']}).", ""]
    if card.get("metrics"):
        lines += ["On the sample's held-out faces (identities never trained on), measured by "
                  "`lrfb benchmark` (tables 3 and degraded):", ""] + _metrics_table(card["metrics"])
    else:
        lines.append("No table rows: a recogniser, or a model that tables 3 and degraded do not list.")
    lines += ["", "## Intended use", "", card["intended_use"], "", "## Limits", ""]
    lines += [f"- {limit}" for limit in card["limits"]]
    return "\n".join(lines) + "\n"
