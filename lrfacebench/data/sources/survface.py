"""QMUL-SurvFace (Cheng, Zhu & Gong, 2018) -> identity-labelled native surveillance LR faces with
the official identification and verification protocols.

Layout (the archive unpacks to ``QMUL-SurvFace/``; ``--root`` is that folder or the one holding it):

* ``training_set/<person>/<person>_cam<c>_<n>.jpg`` -> split ``train``;
* ``Face_Identification_Test_Set/gallery/``, listed with their ids in ``gallery_img_ID_pairs.mat``
  (cell array ``gallery_set``, numbers ``gallery_ids``) -> ``gallery``;
* ``Face_Identification_Test_Set/mated_probe/`` in ``mated_probe_img_ID_pairs.mat``
  (``mated_probe_set``, ``mated_probe_ids``) -> ``probe`` (persons of the gallery);
* ``Face_Identification_Test_Set/unmated_probe/`` -> ``unmated_probe``: the open-set probes,
  persons absent from the gallery (``distractors_<n>.jpg`` have no identity);
* ``Face_Verification_Test_Set/verification_images/`` -> ``verification``, with the pairs of
  ``positive_pairs_names.mat`` and ``negative_pairs_names.mat`` (N x 2 cell arrays of file names,
  variables named as the files) as :class:`~lrfacebench.data.sources.base.Pair` rows for
  ``pairs.csv``. These images are copies of identification test images, so do not pool the
  ``verification`` split with the others.

The two identification lists sit in ``Face_Identification_Test_Set/`` (``Face_Identification_Evaluation/``
is also searched). Identity ``survface:<person>``: the training folder, or the person id that
starts a test file's name (the protocol ids must name the same persons one to one). Gallery and
probe faces keep the protocol's row order; the other faces are sorted by path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lrfacebench.data.sources.base import Item, LayoutError, Pair, Problem, Scan, find_file
from lrfacebench.data.sources.identity_sets import (IdLinks, cell_text, cells, check_splits, identity_folders,
                                                    listed_faces, protocol_list, read_mat, release_root, role_faces)

KIND = "genuine"
CROPPED = ("every image of the release is one face, kept whole at its native size; identities are the "
           "person folders of training_set/ and the person ids that start the test files' names, checked "
           "one to one against the ids of the identification protocol files; splits are the release's parts; "
           "verification pairs go to pairs.csv.")
SPLITS = ("train", "gallery", "probe", "unmated_probe", "verification")
TEST = "Face_Identification_Test_Set"
VERIFY = "Face_Verification_Test_Set"
LIST_DIRS = (TEST, "Face_Identification_Evaluation")
LAYOUT = (f"QMUL-SurvFace/{{training_set/<person>/*.jpg, {TEST}/{{gallery,mated_probe,unmated_probe}}/*.jpg + "
          f"gallery_img_ID_pairs.mat, mated_probe_img_ID_pairs.mat, {VERIFY}/verification_images/*.jpg + "
          "positive_pairs_names.mat, negative_pairs_names.mat}")
# split -> (role folder in Face_Identification_Test_Set/, protocol list, its names and ids variables)
LISTS = {"gallery": ("gallery", "gallery_img_ID_pairs.mat", "gallery_set", "gallery_ids"),
         "probe": ("mated_probe", "mated_probe_img_ID_pairs.mat", "mated_probe_set", "mated_probe_ids")}
PAIR_LISTS = (("positive_pairs_names", True), ("negative_pairs_names", False))


@dataclass
class Options:
    splits: tuple[str, ...] = SPLITS  # official parts to read, of train, gallery, probe, unmated_probe, verification


def scan(root: Path, opts: Options) -> Scan:
    check_splits(opts.splits, SPLITS, "survface")
    base = release_root(root, "QMUL-SurvFace", ("training_set", TEST, VERIFY), LAYOUT)
    out = Scan(root=base)
    links = IdLinks()
    for split in (s for s in SPLITS if s in opts.splits):
        if split == "train":
            out.items += identity_folders(base, "training_set", split, "survface", LAYOUT, out)
        elif split == "unmated_probe":
            out.items += role_faces(base, f"{TEST}/unmated_probe", split, "survface", LAYOUT)
        elif split == "verification":
            faces = role_faces(base, f"{VERIFY}/verification_images", split, "survface", LAYOUT)
            out.items += faces
            _pairs(base, faces, out)
        else:
            folder, mat, names, ids = LISTS[split]
            path = find_file(base, (mat,), LIST_DIRS) or base / TEST / mat
            where = path.relative_to(base).as_posix()
            rows = protocol_list(path, names, ids, where, out)
            out.items += listed_faces(base, f"{TEST}/{folder}", rows, split, "survface", where, links, LAYOUT, out)
    return out


def _pairs(base: Path, faces: list[Item], out: Scan) -> None:
    """The verification pairs of both pair lists, between the ``faces`` of verification_images/; a
    pair naming an image that is not there is reported and skipped."""
    by_name = {Path(it.source).name: it.source for it in faces}
    for key, same in PAIR_LISTS:
        where = f"{VERIFY}/{key}.mat"
        path = base / where
        table = cells(read_mat(path, (key,)), key, path)
        out.files.append(path)
        if table.ndim != 2 or table.shape[1] != 2:
            raise LayoutError(f"{path}: {key} has shape {table.shape}, expected N x 2 file names")
        for n, (a, b) in enumerate(table, 1):
            names = (cell_text(a), cell_text(b))
            if missing := [v or "(empty cell)" for v in names if v not in by_name]:
                out.problems.append(Problem(where, f"row {n}", f"{', '.join(missing)} not in "
                                            f"{VERIFY}/verification_images/; pair skipped"))
                continue
            out.pairs.append(Pair(by_name[names[0]], by_name[names[1]], same, f"{where}:row {n}"))
