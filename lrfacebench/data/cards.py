"""Dataset cards: curated text (``data_cards/<name>.md``) + figures and tables from ``stats.json``.

The curated file follows the Hugging Face dataset-card structure (YAML front matter, then
sections) and answers the *Datasheets for Datasets* questions that do not depend on a build.
It marks where the generated sections go with ``<!-- generated: composition -->`` and
``<!-- generated: collection -->``; missing markers append the sections at the end. The
front matter gains ``size_categories`` from the counts.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lrfacebench.data.sources import cropped
from lrfacebench.data.sources import rule as source_rule
from lrfacebench.data.sources.base import SceneRule
from lrfacebench.errors import DatasetError
from lrfacebench.io import atomic_path, write_text

MARKERS = ("composition", "collection")
FIELDS = {
    "face_id": "stable id `s<shard>-<candidate>` (sortable)",
    "source": "input file, relative to the source root (posix)",
    "frame, time_s": "video frame index and its presentation time in seconds (empty for photos)",
    "track_id": "face track `<video>#<n>` the face belongs to (builds with `tracks.enabled`; else empty)",
    "x1, y1, x2, y2": "face box in original pixels (video with `source.scale`: pixels of the shrunk frame; "
                      "paired sets: the HR crop square)",
    "score": "detector probability (empty for ground-truth boxes and paired crops)",
    "width, height": "box size in original pixels",
    "identity": "identity label (empty when unknown)",
    "split": "the source's split (train, val, test; identity sets also gallery, probe, distractor, ...) or empty",
    "crop": "native-size square crop PNG (no resampling)",
    "lr16": "16x16 PNG: genuine LR = the crop resized with degrade.imresize (bicubic); paired = DS(hr64)",
    "hr64": "64x64 HR PNG (paired sets only)",
    "sha256": "sha256 of the crop PNG bytes",
}


def curated_text(name: str) -> str:
    """The packaged curated card text for dataset ``name`` (``folder`` text for unknown names)."""
    base = resources.files("lrfacebench.data_cards")
    res = base.joinpath(f"{name}.md")
    return (res if res.is_file() else base.joinpath("folder.md")).read_text(encoding="utf-8")


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def _bars(hist: dict[str, int], cap: int) -> tuple[list[int], list[int]]:
    """Bar positions and heights of a sparse size histogram; sizes above ``cap`` share one bar."""
    acc: dict[int, int] = {}
    for k, v in hist.items():
        b = min(int(k), cap + 1)
        acc[b] = acc.get(b, 0) + v
    return list(acc), list(acc.values())


def write_histogram(stats: dict[str, Any], path: Path) -> None:
    """Bar chart of the average face size of kept faces (and all candidates, outlined)."""
    h = stats["size_histogram"]
    cap = max([int(k) for k in h["kept"]] + [32])  # candidates larger than every kept face share one bar
    fig = Figure(figsize=(6, 3), dpi=100)
    ax = fig.subplots()
    ax.bar(*_bars(h["candidates"], cap), width=0.9, color="none", edgecolor="grey", label="candidates")
    ax.bar(*_bars(h["kept"], cap), width=0.9, color="tab:blue", label="kept")
    ax.set_xlabel(f"average face size (w+h)/2, px (last bar: > {cap})")
    ax.set_ylabel("faces")
    ax.set_title(f"{stats['dataset']}: {sum(h['kept'].values()):,} faces kept")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def composition(stats: dict[str, Any]) -> str:
    """The generated "Composition" section: counts, splits, identities, sizes, files, fields."""
    c = stats["counts"]
    s = stats.get("size_summary") or {}
    rows = [("faces", f"{c['kept']:,}"),
            ("source files with faces", f"{c['sources_with_faces']:,} of {c['items']:,} items read"),
            ("faces with an identity", f"{c['faces_with_identity']:,} ({c['identities']:,} identities, "
                                       f"{c['identities_with_2_faces']:,} with >= 2 faces)"),
            ("splits", ", ".join(f"{k or '(none)'}: {v:,}" for k, v in c["splits"].items()) or "-")]
    if t := stats.get("tracks"):
        per = t["faces_per_track"]
        rows.append(("face tracks", f"{t['tracks_with_faces']:,} with kept faces ({t['tracks_with_2_faces']:,} with "
                                    f">= 2" + (f"; faces per track min {per['min']}, median {per['median']}, max "
                                               f"{per['max']}" if per else "")
                     + f"); {t['tracks']:,} tracks among all candidates; {t['identities_from_tracks']:,} "
                       "identities are tracks"))
    if p := stats.get("pairs"):
        rows.append(("verification pairs (`pairs.csv`)", f"{p['pairs']:,} ({p['same']:,} same person); "
                                                         f"{p['with_both_faces']:,} with both faces kept"))
    if s:
        rows.append(("average face size (px)",
                     f"min {s['min']}, median {s['median']}, mean {s['mean']}, max {s['max']}"))
        if "shrunk_share" in s and stats["kind"] != "paired":
            rows.append(("LR faces shrunk to the LR size (crop side > LR size)",
                         f"{s['shrunk_share']:.1%}: resized by the antialiased bicubic that also makes "
                         "artificial LR (`filters.max_crop_side` excludes them)"))
    rule = source_rule(stats["source"])
    hr = ", `hr64/`" if stats["kind"] == "paired" else ""
    pairs = ", `pairs.csv` (one row per verification pair)" if stats.get("pairs") else ""
    out = ["## Composition", "", "*Generated from `stats.json` of this build.*", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    out += ["", "![Size histogram of kept faces](size_histogram.png)", "",
            f"Files: `manifest.csv` (one row per face), `crops/`, `lr16/`{hr}, `rejected.csv`, "
            f"`unreadable.csv`{pairs}, `stats.json`, `review/` (contact sheets).", "",
            "| manifest column | meaning |", "|---|---|"]
    out += [f"| `{k}` | {v} |" for k, v in {**FIELDS, **(rule.columns if rule else {})}.items()]
    return "\n".join(out)


def collection(stats: dict[str, Any]) -> str:
    """The generated "Collection process" section: reader, detector, filters, rejections,
    detector evaluation, versions and hashes."""
    cfg, c = stats["config"], stats["counts"]
    b = cfg["build"]
    out = ["## Collection process", "", "*Generated from `stats.json` of this build.*", "",
           f"- Source reader `{stats['source']}` with options `{_inline(cfg['source'])}`; "
           f"{c['items']:,} items planned in {stats['shards']:,} shards, {c['items_unreadable']:,} unreadable, "
           f"{c['annotation_problems']:,} annotation problems, {c['unreadable_rows']:,} rows in `unreadable.csv`."]
    rule = source_rule(stats["source"])
    if isinstance(rule, SceneRule):
        out.append(f"- Paired faces from shrunk photos: {rule.text}")
    if stats["kind"] == "paired" and not isinstance(rule, SceneRule):
        lr = rule.text if rule else (f"LR = `degrade.downsample` (DS, x{b['hr_size'] // b['lr_size']}) of the "
                                     "quantised HR, quantised with `degrade.to_uint8`.")
        out.append(f"- Paired faces: the fixed crop of the source options above, resized to "
                   f"{b['hr_size']}x{b['hr_size']} with `degrade.imresize` (MATLAB bicubic) and quantised; {lr}")
    elif text := cropped(stats["source"]):
        out += [f"- Pre-cropped faces, no detector: {text}", f"- Filters: `{_inline(cfg['filters'])}`.", _dedupe(cfg)]
    else:
        out += [f"- Detector `{cfg['detector']['name']}`: `{_inline(cfg['detector'])}`.",
                f"- Filters: `{_inline(cfg['filters'])}`.",
                f"- Identity: that of the annotated head/person box holding at least "
                f"{b['identity_min_overlap']:.0%} of the face's area (nearest box centre among several).",
                _dedupe(cfg)]
        if (scale := cfg["source"].get("scale", 1.0)) != 1.0:
            out.append(f"- Frames shrunk by {scale:g} (area averaging) before detection, so boxes are in the "
                       "shrunk frames' pixels; these faces were made small after the camera's blur and compression "
                       "and are partly artificial LR.")
        if c.get("frames_vfr"):
            out.append(f"- {c['frames_vfr']:,} frames of variable-frame-rate files are timed by their timestamps "
                       "(not frame / fps).")
    out += ["", f"Candidates: {c['candidates']:,}; kept after the shards' filters: {c['kept_in_shards']:,}; "
                f"kept in the end: {c['kept']:,}.", ""]
    if c["rejected_by_reason"]:
        out += ["| rejected because | candidates |", "|---|---|"]
        out += [f"| {k} | {v:,} |" for k, v in sorted(c["rejected_by_reason"].items(), key=lambda kv: -kv[1])]
        out.append("")
    return "\n".join(out + _evaluation(stats) + [_provenance(stats)])


def _dedupe(cfg: dict[str, Any]) -> str:
    """The card's line on near-duplicates: across shard borders, or tracks and their filters."""
    t = cfg.get("tracks", {"enabled": False})  # stats.json of builds before tracks have none
    if not cfg["filters"].get("dedupe", True):
        return "- Near-duplicates are not searched (`filters.dedupe = false`)."
    if not t["enabled"]:
        return (f"- Near-duplicates across shard borders are searched in the {cfg['build']['dedupe_window']} "
                "preceding shards.")
    cap = f"at most {t['max_faces']} kept faces per track (evenly spaced)" if t["max_faces"] else "no per-track cap"
    who = ("a face without an annotated identity takes its track's (`track:<track_id>`)" if t["identity_from_track"]
           else "tracks give no identities")
    return (f"- Tracks: faces of consecutive sampled frames linked when IoU >= {t['min_iou']} or their centres lie "
            f"within {t['max_shift']} face sizes per step, sizes within x{t['max_size_ratio']}, across up to "
            f"{t['max_gap']} frames without the face (`lrfacebench.data.tracks`); near-duplicates are searched "
            f"within each track; {cap}; {who}.")


def _evaluation(stats: dict[str, Any]) -> list[str]:
    evals = {k: v for k, v in stats.get("detector_eval", {}).items() if v["n_gt"]}
    if not evals:
        return []
    out = [f"Recall and precision on the annotated faces among this build's inputs (match: IoU >= "
           f"{stats['config']['build']['eval_min_iou']}, one to one). `native`: this build's detections on "
           "the stored photos; `Npx`: the photos shrunk with `degrade.imresize` so that the annotated faces "
           f"average N px, detector scales {_scales(stats['config'])}; `detector`: raw detections; "
           "`detector+filters`: after the quality filters (every filter but the size window and "
           "near-duplicates). Every unmatched detection counts as a false positive, so unannotated faces "
           "lower the precision.", "",
           "| faces / stage | annotated | detections | matched | recall | precision |", "|---|---|---|---|---|---|"]
    out += [f"| {k} | {v['n_gt']} | {v['n_det']} | {v['n_tp']} | {v['recall']} | {v['precision']} |"
            for k, v in evals.items()]
    return out + [""]


def _scales(cfg: dict[str, Any]) -> list[float]:
    return list(cfg["build"].get("eval_scales") or cfg["detector"]["scales"])


def _provenance(stats: dict[str, Any]) -> str:
    env, t, h = stats.get("environment", {}), stats["timings"], stats["source_hashes"]
    files = ", ".join(f"`{k}` {v[:12]}" for k, v in h["annotations"].items()) or "none"
    return (f"Built with lrfacebench {env.get('lrfacebench')} (git {str(env.get('git_sha'))[:10]}), "
            f"torch {env.get('torch')}, facenet-pytorch {env.get('facenet-pytorch')} on "
            f"{env.get('device', 'cpu')}; config hash `{stats['config_hash'][:16]}`, plan hash "
            f"`{stats['plan_hash'][:16]}`; shard worker time {t.get('total_s', 0):.0f} s. Annotation files "
            f"(sha256): {files}; inputs hash {h['inputs_sha256'][:12]} over {h['n_inputs_hashed']:,} files.")


def _inline(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in d.items())


def render(stats: dict[str, Any], text: str) -> str:
    """The card: curated ``text`` with the generated sections at their markers."""
    parts = {"composition": composition(stats), "collection": collection(stats)}
    if text.startswith("---\n"):
        _, front, body = text.split("---\n", 2)
        if "size_categories" not in front:
            front += f"size_categories:\n- {size_category(stats['counts']['kept'])}\n"
        head = f"---\n{front}---\n"
    else:
        head, body = "", text
    for key, section in parts.items():
        marker = f"<!-- generated: {key} -->"
        body = body.replace(marker, section) if marker in body else body.rstrip() + "\n\n" + section + "\n"
    return head + body


def write_card(out: Path, text: str | None = None) -> Path:
    """Write ``out/DATASET_CARD.md`` and ``out/size_histogram.png`` from ``out/stats.json``."""
    if not (out / "stats.json").is_file():
        raise DatasetError(f"{out}/stats.json not found: not a dataset built by lrfb build-dataset")
    stats = json.loads((out / "stats.json").read_text())
    write_histogram(stats, out / "size_histogram.png")
    path = out / "DATASET_CARD.md"
    write_text(path, render(stats, text if text is not None else curated_text(stats["dataset"])))
    return path
