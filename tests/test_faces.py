"""Face sets (embedded sample and built dataset folders) and the on-device batch feeder."""
from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from lrfacebench.data.faces import list_dataset, list_sample, load_faces
from lrfacebench.degrade import downsample, imresize, to_uint8
from lrfacebench.errors import DatasetError
from lrfacebench.io import read_rgb, write_png
from lrfacebench.methods.base import Stage
from lrfacebench.training.feeder import Feeder

COLUMNS = ("face_id,source,frame,time_s,x1,y1,x2,y2,score,width,height,identity,split,crop,lr16,hr64,sha256").split(",")


def _provenance(sample_dir: Path, kind: str) -> list[dict[str, str]]:
    with open(sample_dir / "provenance.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["kind"] == kind]


def make_built_set(root: Path, paired: bool, n: int = 24, sample_dir: Path | None = None) -> Path:
    """A folder in the `lrfb build-dataset` layout made from the sample's real faces.

    paired: HR crops -> hr64 (imresize) + lr16 = DS(hr64), with identities, splits train/test.
    genuine: genuine-LR crops -> lr16 (imresize), no hr64, no identity.
    """
    sample_dir = sample_dir or Path(__file__).resolve().parent.parent / "lrfacebench" / "sample"
    rows = [r for r in _provenance(sample_dir, "hr" if paired else "genuine_lr")][:n]
    out = []
    for i, r in enumerate(rows):
        face_id = f"s00000-{i:06d}"
        x = torch.from_numpy(read_rgb(sample_dir / r["path"])).permute(2, 0, 1)[None].float() / 255
        row = dict.fromkeys(COLUMNS, "")
        row.update(face_id=face_id, source=r["path"], identity=r["identity"] if paired else "",
                   split="train" if i % 3 else "test", crop=f"crops/{face_id}.png", lr16=f"lr16/{face_id}.png")
        if paired:
            hr = to_uint8(imresize(x, (64, 64)))
            write_png(root / f"hr64/{face_id}.png", hr[0].permute(1, 2, 0).numpy())
            lr = to_uint8(downsample(hr.float() / 255))
            row["hr64"] = f"hr64/{face_id}.png"
        else:
            lr = to_uint8(imresize(x, (16, 16)))
        write_png(root / f"lr16/{face_id}.png", lr[0].permute(1, 2, 0).numpy())
        out.append(row)
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(out)
    return root


def test_sample_sets_are_real_faces_at_64_and_16(sample_dir):
    hr, lr = load_faces(list_sample("hr")), load_faces(list_sample("lr", ("train", "test")))
    rows_hr = [r for r in _provenance(sample_dir, "hr") if r["split"] == "train"]
    assert hr.images.shape == (len(rows_hr), 3, 64, 64) and hr.images.dtype == torch.uint8
    assert lr.images.shape == (len(_provenance(sample_dir, "genuine_lr")), 3, 16, 16)
    # identities: sorted labels, contiguous indices, -1 exactly where the label is empty
    assert list(hr.identities) == sorted({r["identity"] for r in rows_hr if r["identity"]})
    assert int((hr.identity == -1).sum()) == sum(not r["identity"] for r in rows_hr)
    i = next(k for k, r in enumerate(rows_hr) if r["identity"])
    assert hr.identities[hr.identity[i]] == rows_hr[i]["identity"]
    x = torch.from_numpy(read_rgb(sample_dir / rows_hr[i]["path"])).permute(2, 0, 1)[None].float() / 255
    assert torch.equal(hr.images[i], to_uint8(imresize(x, (64, 64)))[0])
    assert lr.n_identities == 0 and bool((lr.identity == -1).all())
    assert hr.images.float().std() > 20  # real faces, not blanks


def test_built_paired_set_round_trips_and_filters_splits(tmp_path):
    root = make_built_set(tmp_path / "celeba", paired=True)
    hr = load_faces(list_dataset(root, "hr"))
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train = [r for r in rows if r["split"] == "train"]
    assert len(hr) == len(train) == 16 and hr.names == [r["face_id"] for r in train]
    first = torch.from_numpy(read_rgb(root / train[0]["hr64"])).permute(2, 0, 1)
    assert torch.equal(hr.images[0], first)
    assert [hr.identities[k] if k >= 0 else "" for k in hr.identity.tolist()] == [r["identity"] for r in train]
    assert len(load_faces(list_dataset(root, "lr", ("all",)))) == 24
    assert len(list_dataset(root, "hr", ("test",))) == 8
    with pytest.raises(DatasetError, match=r"no faces in split\(s\) \['val'\]; it has \['test', 'train'\]"):
        list_dataset(root, "hr", ("val",))


def test_mismatched_or_empty_dataset_folders_are_clear_errors(tmp_path):
    genuine = make_built_set(tmp_path / "wider", paired=False, n=6)
    with pytest.raises(DatasetError, match="no hr64 images.*genuine-LR set: pass it with --lr"):
        list_dataset(genuine, "hr")
    assert len(list_dataset(genuine, "lr", ("all",))) == 6
    with pytest.raises(DatasetError, match="no manifest.csv"):
        list_dataset(tmp_path, "lr")
    with pytest.raises(DatasetError, match="not a folder"):
        list_dataset(tmp_path / "missing", "hr")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "manifest.csv").write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(DatasetError, match="empty dataset"):
        list_dataset(tmp_path / "empty", "lr")
    (tmp_path / "empty" / "manifest.csv").write_text("face_id,lr16\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['identity', 'split', 'hr64'\]"):
        list_dataset(tmp_path / "empty", "lr")


def test_unreadable_faces_are_counted_and_skipped(tmp_path, caplog):
    root = make_built_set(tmp_path / "wider", paired=False, n=5)
    (root / "lr16" / "s00000-000001.png").write_bytes(b"")
    (root / "lr16" / "s00000-000002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with caplog.at_level(logging.WARNING):
        fs = load_faces(list_dataset(root, "lr", ("all",)))
    assert len(fs) == 3 and fs.info["n_unreadable"] == 2
    assert "zero-byte" in caplog.text and "2 of 5 faces unreadable" in caplog.text
    for p in (root / "lr16").iterdir():
        p.write_bytes(b"")
    with pytest.raises(DatasetError, match="none of the 5 lr faces could be read"):
        load_faces(list_dataset(root, "lr", ("all",)))


@pytest.fixture(scope="module")
def sets():
    return load_faces(list_sample("hr")), load_faces(list_sample("lr"))


def test_feeder_batches_are_device_tensors_with_ds_pairs_and_aligned_identities(sets):
    hr_set, lr_set = sets
    feeder = Feeder(hr_set, lr_set, "cpu", seed=1)
    b = feeder.batch(Stage("s", 10, batch_size=12), 0, 4)
    assert b.hr.shape == (12, 3, 64, 64) and b.lr_genuine.shape == (12, 3, 16, 16)
    assert b.hr.dtype == torch.float32 and 0 <= float(b.hr.min()) and float(b.hr.max()) <= 1
    # x_a = DS(hr) quantised to uint8 levels, like stored LR faces (not float, never outside [0,1])
    assert torch.equal(b.lr_artificial, to_uint8(downsample(b.hr)).float() / 255)
    assert not torch.equal(b.lr_artificial, downsample(b.hr))
    lookup = {hr_set.images[i].numpy().tobytes(): i for i in range(len(hr_set))}
    idx = [lookup[to_uint8(x).numpy().tobytes()] for x in b.hr]
    assert b.identity.tolist() == hr_set.identity[idx].tolist()
    lr_bytes = {lr_set.images[i].numpy().tobytes() for i in range(len(lr_set))}
    assert all(to_uint8(x).numpy().tobytes() in lr_bytes for x in b.lr_genuine)
    only = feeder.batch(Stage("s", 10, needs=("lr_genuine",), batch_size=4), 0, 0)
    assert only.hr is None and only.identity is None and only.lr_artificial is None
    with pytest.raises(DatasetError, match="needs \\['lr_genuine'\\]"):
        Feeder(hr_set, None, "cpu").batch(Stage("x", 1, batch_size=2), 0, 0)


def test_hflip_mirrors_about_half_of_the_faces_before_ds_and_is_reproducible(sets):
    hr_set, lr_set = sets
    stage = Stage("s", 10, needs=("hr", "lr_artificial", "lr_genuine"), batch_size=64)
    b = Feeder(hr_set, lr_set, "cpu", seed=5, hflip=True).batch(stage, 0, 2)
    again = Feeder(hr_set, lr_set, "cpu", seed=5, hflip=True).batch(stage, 0, 2)
    plain = Feeder(hr_set, lr_set, "cpu", seed=5).batch(stage, 0, 2)  # same faces, not mirrored
    assert torch.equal(b.hr, again.hr) and torch.equal(b.lr_genuine, again.lr_genuine)
    assert torch.equal(b.lr_artificial, to_uint8(downsample(b.hr)).float() / 255)  # made after mirroring
    for got, ref in ((b.hr, plain.hr), (b.lr_genuine, plain.lr_genuine)):
        mirrored = torch.tensor([torch.equal(g, r.flip(2)) and not torch.equal(g, r) for g, r in zip(got, ref)])
        kept = torch.tensor([torch.equal(g, r) for g, r in zip(got, ref)])
        assert bool((mirrored | kept).all()) and 16 <= int(mirrored.sum()) <= 48


def test_identity_stages_draw_only_labelled_faces(sets):
    """The sample has HR faces without identity (-1): a stage that needs identities never gets
    one, over more than an epoch of its labelled faces; other stages still see every face."""
    hr_set, _ = sets
    labelled = int((hr_set.identity >= 0).sum())
    assert 0 < labelled < len(hr_set)
    feeder = Feeder(hr_set, None, "cpu", seed=3)
    fr = Stage("fr", 100, needs=("hr", "identity"), batch_size=16)
    ids = torch.cat([feeder.batch(fr, 0, k).identity for k in range(labelled // 16 + 2)])
    assert int(ids.min()) >= 0 and len(set(ids.tolist())) == hr_set.n_identities
    sr = Stage("sr", 100, needs=("hr",), batch_size=16)
    seen = {to_uint8(x).numpy().tobytes() for k in range(len(hr_set) // 16 + 2)
            for x in feeder.batch(sr, 1, k).hr}
    assert len(seen) > labelled
    unlabelled = dataclasses.replace(hr_set, identity=torch.full_like(hr_set.identity, -1))
    with pytest.raises(DatasetError, match="needs identity labels but no HR face has one"):
        Feeder(unlabelled, None, "cpu").batch(fr, 0, 0)


def test_feeder_is_a_pure_function_of_step_and_covers_epochs_across_ranks(sets):
    n, b = 156, 13  # the first 156 = 12 x 13 sample faces: one epoch is exactly 12 steps
    full, _ = sets
    hr_set = dataclasses.replace(full, images=full.images[:n], identity=full.identity[:n],
                                 names=full.names[:n])
    stage = Stage("s", 100, needs=("identity",), batch_size=b)
    a, c = Feeder(hr_set, None, "cpu", seed=7), Feeder(hr_set, None, "cpu", seed=7)
    s = a._streams["hr"]
    epoch = torch.cat([s.indices(0, k, b, 0, 1) for k in range(n // b)])
    assert sorted(epoch.tolist()) == list(range(n))  # without replacement within an epoch
    nxt = torch.cat([s.indices(0, k, b, 0, 1) for k in range(n // b, 2 * n // b)])
    assert sorted(nxt.tolist()) == list(range(n)) and not torch.equal(nxt, epoch)  # reshuffled
    assert torch.equal(a.batch(stage, 0, 20).identity, c.batch(stage, 0, 20).identity)  # order-free
    assert not torch.equal(s.indices(0, 3, b, 0, 1), s.indices(1, 3, b, 0, 1))  # per stage
    r0 = torch.cat([s.indices(0, k, b, 0, 2) for k in range(7)])
    r1 = torch.cat([s.indices(0, k, b, 1, 2) for k in range(7)])
    assert set(r0[:78].tolist()).isdisjoint(r1[:78].tolist())  # ranks split each global batch
    wrap = s.indices(0, 0, 400, 0, 1)  # a batch larger than the set spans epochs
    assert wrap.shape == (400,) and sorted(wrap[:n].tolist()) == list(range(n))
    assert np.array_equal(wrap[n:2 * n].sort().values.numpy(), np.arange(n))
