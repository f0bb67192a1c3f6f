"""A dataset recipe: ``pipelines/<source>.toml`` (packaged) <- a config file <- ``-o key=value``
overrides <- the command line's ``--limit``/``--device``/``--seed``, resolved into a
:class:`BuildConfig` (source reader options, detector, filters, builder options)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from lrfacebench import config as cfglib
from lrfacebench.data.detect import DetectorConfig
from lrfacebench.data.filters import FilterConfig
from lrfacebench.data.sources import get_source
from lrfacebench.data.tracks import TrackConfig
from lrfacebench.errors import BuildError, LrfbError
from lrfacebench.io import sha256_json


@dataclass
class BuildOptions:
    """How the builder itself works (the ``[build]`` table of a recipe).

    ``shard_size``: items (photos/frames) per shard. ``identity_min_overlap``: fraction of a face
    box that must lie inside an annotated head/person box to take its identity.
    ``lr_size``/``hr_size``: output sizes. ``limit``: first N items only (0 = all).
    ``review_per_reason``: rejected crops kept per reason and shard for the review sheets;
    ``review_faces``: faces per contact sheet; ``review_sheets``: at most this many sheets of kept
    faces. ``dedupe_window``: near-duplicates are also searched in this many preceding shards.
    ``eval_face_sizes``: photos with annotated face boxes are also shrunk so their faces average
    these sizes (px) and the detector's recall and precision are measured there (``eval_min_iou``),
    with the recipe's detector at ``eval_scales`` (empty: the recipe's scales).
    """

    shard_size: int = 16
    identity_min_overlap: float = 0.5
    lr_size: int = 16
    hr_size: int = 64
    limit: int = 0
    review_per_reason: int = 8
    review_faces: int = 256
    review_sheets: int = 40
    dedupe_window: int = 2
    eval_face_sizes: tuple[float, ...] = ()
    eval_min_iou: float = 0.4
    eval_scales: tuple[float, ...] = ()


@dataclass
class BuildConfig:
    """A resolved recipe: ``name`` (data card), ``source`` (``{"name": reader, **reader options}``),
    detector, filters, builder options and face tracks (video)."""

    name: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    build: BuildOptions = field(default_factory=BuildOptions)
    tracks: TrackConfig = field(default_factory=TrackConfig)

    def reader_options(self) -> Any:
        reader = get_source(self.source.get("name", self.name))
        return cfglib.from_dict(reader.Options, {k: v for k, v in self.source.items() if k != "name"})

    def compat_hash(self) -> str:
        """Hash of everything that changes the output (not the device it runs on)."""
        d = cfglib.to_dict(self)
        d["detector"] = {k: v for k, v in d["detector"].items() if k != "device"}
        return sha256_json(d)


def load_recipe(name: str) -> dict[str, Any]:
    """The packaged recipe ``pipelines/<name>.toml`` as a dict."""
    res = resources.files("lrfacebench.pipelines").joinpath(f"{name}.toml")
    if not res.is_file():
        raise BuildError(f"no recipe pipelines/{name}.toml in the installed package")
    return cfglib.parse_toml(res.read_text(encoding="utf-8"))


def resolve_config(source: str, config_file: Path | None = None, overrides: Sequence[str] = (),
                   limit: int | None = None, device: str | None = None,
                   seed: int | None = None) -> BuildConfig:
    """Recipe of ``source`` <- ``--config`` file <- ``-o key=value`` <- ``--limit``/``--device``/``--seed``.

    ``seed`` sets ``source.seed``; a source without one (no randomness) is an
    :class:`~lrfacebench.errors.LrfbError` with ``param="seed"``.
    """
    layers = [load_recipe(source)]
    if config_file is not None:
        layers.append(cfglib.load_file(config_file))
    layers.append(cfglib.parse_overrides(list(overrides)))
    options: dict[str, Any] = {}
    if limit is not None:
        options["build"] = {"limit": limit}
    if device is not None:
        options["detector"] = {"device": device}
    layers.append(options)
    cfg = cfglib.resolve(BuildConfig, *layers)
    if seed is not None:
        name = cfg.source.get("name", cfg.name)
        if "seed" not in {f.name for f in dataclasses.fields(get_source(name).Options)}:
            raise LrfbError(f"{seed}: source {name!r} draws nothing at random and has no seed "
                            "(degraded and degraded_scenes have one)", param="seed")
        cfg.source["seed"] = seed
    cfg.reader_options()  # validate the [source] table now, with the reader's own error messages
    return cfg
