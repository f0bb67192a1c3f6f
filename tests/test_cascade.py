"""The pyramid cascade's pieces: its levels, P-Net tiles, FLOP count and "Min" NMS."""
from __future__ import annotations

import pytest
import torch
from facenet_pytorch.models.mtcnn import PNet

from lrfacebench.data.cascade import TILE_OVERLAP, WINDOW, level_scales, nms_min, pnet_flops, tile_starts


def test_one_pyramid_from_x4_holds_the_levels_of_the_x2_and_x1_pyramids():
    x4 = level_scales(1000, 700, 4.0, 12.0, 0.709)
    for top in (2.0, 1.0):
        for s in level_scales(1000, 700, top, 12.0, 0.709):
            assert min(abs(s / t - 1) for t in x4) < 0.02  # factor**2 = 0.503 ~ 1/2
    assert x4[0] == 4.0 and 700 * x4[-1] >= WINDOW > 700 * x4[-1] * 0.709
    # faces >= 6 px: x4 (3-4.2 px faces) and x2.84 (4.2-6 px) are skipped; one level of margin keeps x2.84
    assert level_scales(1000, 700, 4.0, 12.0, 0.709, smallest_face=6.0) == x4[2:]
    assert level_scales(1000, 700, 4.0, 12.0, 0.709, smallest_face=6.0, margins=(1, 1)) == x4[1:]


def test_levels_finding_only_faces_outside_the_size_window_are_skipped():
    x4 = level_scales(1000, 700, 4.0, 12.0, 0.709)
    window = level_scales(1000, 700, 4.0, 12.0, 0.709, smallest_face=6.0, largest_face=16.0)
    # x2.01 (6-8.5 px faces) to x1.01 (11.9-16.8 px), plus x0.72 (16.8-23.6 px) and x0.51 (23.6-33 px):
    # two levels of margin above
    assert [round(s, 2) for s in window] == [2.01, 1.43, 1.01, 0.72, 0.51] and set(window) <= set(x4)
    one_above = level_scales(1000, 700, 4.0, 12.0, 0.709, smallest_face=6.0, largest_face=16.0, margins=(0, 1))
    tight = level_scales(1000, 700, 4.0, 12.0, 0.709, smallest_face=6.0, largest_face=16.0, margins=(0, 0))
    assert one_above == window[:-1] and tight == window[:-2]
    assert level_scales(1000, 700, 4.0, 12.0, 0.709, smallest_face=6.0, largest_face=16.0, margins=(2, 2)) == x4[:7]


@pytest.mark.parametrize("length", [12, 13, 100, 511, 512, 513, 1000, 1035])
def test_tiles_cover_every_window_once(length):
    tile = 64
    starts = tile_starts(length, tile)
    assert all(s % 2 == 0 for s in starts)  # P-Net's stride: tile windows line up with the level's
    windows = [s + x for s in starts for x in range(0, min(tile, length - s) - WINDOW + 1, 2)]
    assert sorted(windows) == list(range(0, length - WINDOW + 1, 2))
    assert all(b - a == tile - TILE_OVERLAP for a, b in zip(starts, starts[1:]))


def test_pnet_flops_from_layer_shapes():
    # one 12x12 window: conv1 10x10 out x 10 ch x 27, pool to 5x5, conv2 3x3 x 16 x 90,
    # conv3 1x1 x 32 x 144, heads 1x1 x 6 x 32; 2 FLOPs a multiply-add
    assert pnet_flops(PNet(pretrained=False), 12, 12) == 2 * (100 * 10 * 27 + 9 * 16 * 90 + 32 * 144 + 6 * 32)
    per_pixel = pnet_flops(PNet(pretrained=False), 1000, 1000) / 1e6
    assert 3600 < per_pixel < 3800


def test_nms_min_drops_boxes_inside_better_ones():
    boxes = torch.tensor([[0, 0, 100, 100], [10, 10, 30, 30], [200, 0, 260, 60], [205, 5, 255, 55]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95], dtype=torch.float64)
    # box 1 lies inside box 0 (IoU 0.04, but all of its area overlaps): suppressed; box 2 contains
    # the better box 3: suppressed
    assert nms_min(boxes, scores, torch.zeros(4, dtype=torch.int64), 0.7).tolist() == [3, 0]
    groups = torch.tensor([0, 1, 0, 0])  # another group never suppresses
    assert nms_min(boxes, scores, groups, 0.7).tolist() == [3, 0, 1]
    assert nms_min(boxes[:0], scores[:0], groups[:0], 0.7).tolist() == []
