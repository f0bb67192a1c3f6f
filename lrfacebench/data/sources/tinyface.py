"""TinyFace (Cheng, Zhu & Gong, ACCV 2018) -> identity-labelled genuine LR faces (native web faces,
average 20x16 px) with the official face-identification protocol.

Layout (the archive unpacks to ``tinyface/``; ``--root`` is that folder or the one holding it):

* ``Training_Set/<identity>/<identity>_<n>.jpg`` (2,570 identities) -> split ``train``;
* ``Testing_Set/Gallery_Match/<person>_<n>.jpg``, listed with their ids in
  ``Testing_Set/gallery_match_img_ID_pairs.mat`` (cell array ``gallery_set``, numbers
  ``gallery_ids``; 4,443 faces) -> ``gallery``;
* ``Testing_Set/Probe/<person>_<n>.jpg`` in ``Testing_Set/probe_img_ID_pairs.mat``
  (``probe_set``, ``probe_ids``; 3,728 faces) -> ``probe``;
* ``Testing_Set/Gallery_Distractor/*.jpg`` (153,428 faces of no labelled identity, which the
  protocol adds to the gallery) -> ``distractor``, empty identity.

Identity ``tinyface:<person>``: the identity folder, or the person id that starts a test file's
name (the protocol ids must name the same persons one to one). Gallery and probe faces keep the
protocol's row order; the other faces are sorted by path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lrfacebench.data.sources.base import Scan
from lrfacebench.data.sources.identity_sets import (IdLinks, check_splits, identity_folders, listed_faces,
                                                    protocol_list, release_root, role_faces)

KIND = "genuine"
CROPPED = ("every image of the release is one face, kept whole at its native size; identities are the "
           "identity folders of Training_Set/ and the person ids that start the test files' names, checked "
           "one to one against the ids of the protocol files; splits are the release's parts.")
SPLITS = ("train", "gallery", "probe", "distractor")
LAYOUT = ("tinyface/{Training_Set/<identity>/*.jpg, Testing_Set/{Gallery_Match,Probe,Gallery_Distractor}/*.jpg, "
          "Testing_Set/gallery_match_img_ID_pairs.mat, Testing_Set/probe_img_ID_pairs.mat}")
# split -> (role folder, protocol list, its names and ids variables), all in Testing_Set/
LISTS = {"gallery": ("Gallery_Match", "gallery_match_img_ID_pairs.mat", "gallery_set", "gallery_ids"),
         "probe": ("Probe", "probe_img_ID_pairs.mat", "probe_set", "probe_ids")}


@dataclass
class Options:
    splits: tuple[str, ...] = SPLITS  # official parts to read, of train, gallery, probe, distractor


def scan(root: Path, opts: Options) -> Scan:
    check_splits(opts.splits, SPLITS, "tinyface")
    base = release_root(root, "tinyface", ("Training_Set", "Testing_Set"), LAYOUT)
    out = Scan(root=base)
    links = IdLinks()
    for split in (s for s in SPLITS if s in opts.splits):
        if split == "train":
            out.items += identity_folders(base, "Training_Set", split, "tinyface", LAYOUT, out)
        elif split == "distractor":
            out.items += role_faces(base, "Testing_Set/Gallery_Distractor", split, None, LAYOUT)
        else:
            folder, mat, names, ids = LISTS[split]
            where = f"Testing_Set/{mat}"
            rows = protocol_list(base / where, names, ids, where, out)
            out.items += listed_faces(base, f"Testing_Set/{folder}", rows, split, "tinyface", where, links, LAYOUT, out)
    return out
