"""``lrfb diagnose RUN``: what a (finished or unfinished) training run's nets do, in numbers.

For the newest checkpoint of RUN (every net; ``final.pt``'s deployed nets if there is none):

1. CR only: phi_cr's residual ``r = phi_cr(x) - x`` in [-1,1] units (CR's internal range) on
   genuine LR test faces, the run's genuine LR training faces and artificial faces (quantised
   ``DS`` of HR test faces): RMS and the share of r that is one fixed pattern
   (:func:`lrfacebench.metrics.residual.residual_stats`). phi_cr should leave artificial faces
   alone: ``rms`` on them below :data:`.residuals.ARTIFICIAL_RMS_LIMIT`.
2. LR consistency of the whole method on genuine test faces: mean ``|DS(SR) - x|``, [0,1] units.
3. Batch norm: per BN layer of every net, the gap between the batch statistics of its input
   and its running statistics, and the net's output gap between train and eval mode, on one
   batch of :data:`.batchnorm.BN_FACES` typical inputs.
4. ``metrics.csv``: first/last/tail-mean/min/max of every logged name per stage, and the
   spec's loss-scale check (one ``gn_*`` gradient norm > 100x another in a stage).
5. CR only: Table 5's direction, FID and KID of the genuine test faces and of phi_cr(x) against
   the artificial faces (:mod:`.regulation`).
6. CR with a trained D' (stage 2 has run): D''s scores of HR training faces, HR test faces of
   unseen identities and SR faces, to tell a realism critic from an identity-membership one
   (:mod:`.critic`).
7. ``residuals.png``: genuine and artificial faces, phi_cr(x), the residual and the mean
   residual (the fixed pattern), both amplified (LR | SR for methods without phi_cr).

Writes ``diagnose.json`` (every number) and ``residuals.png`` into ``--out`` (RUN/diagnose).

Modules: :mod:`.faces` (the run and its faces), :mod:`.residuals` (1, 2, 7), :mod:`.batchnorm` (3),
:mod:`.metrics_log` (4), :mod:`.regulation` (5), :mod:`.critic` (6), :mod:`.report` (the printed report).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lrfacebench import io
from lrfacebench.diagnose.batchnorm import bn_report
from lrfacebench.diagnose.critic import critic_report
from lrfacebench.diagnose.faces import check_run, load_diagnosis_faces, load_run_method
from lrfacebench.diagnose.metrics_log import metrics_summary
from lrfacebench.diagnose.regulation import regulation_report
from lrfacebench.diagnose.residuals import lr_consistency_report, phi_cr_residuals, residual_grid
from lrfacebench.runs import FINAL


def diagnose(run: Path, genuine: Path | None = None, reference: Path | None = None, device: str = "cpu",
             out: Path | None = None) -> dict[str, Any]:
    """Every number of a diagnosis of ``run`` (see the module docstring) as one JSON-able dict;
    with ``out``, also writes ``out/diagnose.json`` and ``out/residuals.png``."""
    run = Path(run)
    check_run(run)
    method, weights = load_run_method(run, device)
    faces = load_diagnosis_faces(run, genuine, reference)
    config = io.read_json(run / "config.json")
    report = {"run": str(run), "method": config.get("method"), "variant": config.get("variant"),
              "preset": config.get("preset"), "weights": weights, "finished": (run / FINAL).is_file(),
              "nets": sorted(method.nets), "faces": {k: {"source": v, "n": len(getattr(faces, k))}
                                                     for k, v in faces.sources.items()},
              "phi_cr_residual": phi_cr_residuals(method, faces),
              "lr_consistency": lr_consistency_report(method, faces),
              "batch_norm": bn_report(method, faces),
              "metrics": metrics_summary(run / "metrics.csv", list(method.nets)),
              "table5": regulation_report(method, faces, device)}
    d_prime_trained = weights != FINAL and "stage2" in report["metrics"]["stages"]
    report["identity_critic"] = critic_report(method, faces, d_prime_trained)
    report["faces"]["artificial"] = {"source": "to_uint8(DS(hr))", "n": len(faces.artificial)}
    if out is not None:
        io.write_png(out / "residuals.png", residual_grid(method, faces))
        report["files"] = {"json": str(out / "diagnose.json"), "png": str(out / "residuals.png")}
        io.write_json(out / "diagnose.json", report)
    return report
