"""The zoo's checks of a trained model: does it up-sample faces into faces (the face check), and may
its weights ship in fp16 (the fp16 check)?

- Face check: per-image Y-SSIM between the model's output and the bicubic up-sampling of the same
  input; a model whose median over the sample's genuine test faces is below
  :data:`SSIM_THRESHOLD` paints something else than the face it was given (smoke-trained blobs
  score near 0, real training well above).
- fp16 check: the weights rounded to fp16 (what loading an fp16 file gives) keep the mean Y-PSNR
  against HR within :data:`FP16_MAX_GAP_DB` of fp32 on every held-out set; for a recogniser, every
  face's fp16 features keep a cosine of at least :data:`FP16_MIN_COSINE` to the fp32 ones.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch

from lrfacebench.degrade import upsample
from lrfacebench.methods import Method
from lrfacebench.metrics.psnr_ssim import measure_tensors

SSIM_THRESHOLD = 0.5
FP16_MAX_GAP_DB = 0.05
FP16_MIN_COSINE = 0.9999


def super_resolve_all(method: Method, lr: torch.Tensor, artificial: bool = False, batch: int = 64) -> torch.Tensor:
    """``(N,3,16,16)`` float in [0,1] -> ``(N,3,64,64)`` float in [0,1] on the CPU, in batches."""
    with torch.no_grad():
        return torch.cat([method.super_resolve(lr[i:i + batch].to(method.device), artificial=artificial).float().cpu()
                          for i in range(0, len(lr), batch)])


def bicubic_ssim(method: Method, lr: torch.Tensor) -> np.ndarray:
    """``(N,)`` Y-SSIM of each genuine-LR face's SR output against its bicubic x4 up-sampling
    (both quantised to uint8); ``lr`` ``(N,3,16,16)`` float in [0,1]."""
    sr = super_resolve_all(method, lr)
    return np.array([r["ssim_y"] for r in measure_tensors(sr, upsample(lr.float(), 4).clamp(0, 1)).per_image])


def fp16_rounded(method: Method, nets: Sequence[str]) -> Method:
    """A copy of ``method`` whose ``nets`` have every floating tensor rounded to fp16 and back."""
    twin = copy.deepcopy(method)
    with torch.no_grad():
        for name in nets:
            for t in twin.nets[name].state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half())
    return twin.eval()


def psnr_gap_db(a: Method, b: Method, lr: torch.Tensor, hr: torch.Tensor, artificial: bool) -> float:
    """``|mean Y-PSNR(a) - mean Y-PSNR(b)|`` in dB of two methods' outputs of ``lr``
    ``(N,3,16,16)`` against ``hr`` ``(N,3,64,64)``, float in [0,1]."""
    pa, pb = (measure_tensors(super_resolve_all(m, lr, artificial), hr).mean("psnr_y") for m in (a, b))
    return abs(pa - pb)


def min_feature_cosine(embed_a: Callable[[torch.Tensor], torch.Tensor],
                       embed_b: Callable[[torch.Tensor], torch.Tensor], faces: torch.Tensor) -> float:
    """Smallest per-face cosine between two recognisers' features of ``faces`` ``(N,3,64,64)`` in [0,1]."""
    with torch.no_grad():
        fa, fb = embed_a(faces).double().cpu(), embed_b(faces).double().cpu()
    return float(torch.nn.functional.cosine_similarity(fa, fb, dim=1).min())
