"""CR's identity critic D' (Eq. 8): does it judge how real a face's identity features look, or
whether the face is one of phi_fr's training identities?

In stage 2, D' learns to tell phi_fr features of HR training faces (real) from those of
phi_sr(phi_cr(x_g)) (fake). The real faces are the very faces phi_fr was trained on, whose
features sit in tight centre-loss clusters, so D' may learn "one of my identities" instead of
"a real face" (issue 14's cause 5), and push SR faces towards the training identities.

The probe feeds D' three sets of 64x64 faces: the run's HR training faces (phi_fr's identities),
HR test faces of identities neither phi_fr nor D' saw (the sample's test split shares no identity
with its training split; with ``--reference``, say so only of faces of other identities) and SR
of the genuine test faces. A D' that judges realism scores both HR
sets alike: AUC(HR train vs HR test) near 0.5, AUC(HR test vs SR) well above it. A D' that
judges identity membership puts the unseen HR faces with the SR faces: AUC(HR train vs HR test)
near AUC(HR train vs SR). Beside it, each set's cosine to its nearest CentreFace centre shows how
much tighter phi_fr holds its own identities.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from lrfacebench.diagnose.faces import Faces
from lrfacebench.diagnose.residuals import batched
from lrfacebench.methods import Method
from lrfacebench.metrics.bootstrap import auc_interval

# the pairs of sets whose D' scores are compared, (A, B): AUC = P(D'(A) > D'(B))
PAIRS = (("hr_train", "hr_test"), ("hr_test", "sr_genuine"), ("hr_train", "sr_genuine"))


def critic_report(method: Method, faces: Faces, trained: bool) -> dict[str, Any] | None:
    """``{"sets": {name: {"n", "p_real", "centre_cos"}}, "auc": {"A_vs_B": {"value", "low",
    "high", "chance_excluded"}}}`` (means over each set's faces; 95 % intervals, each set resampled
    on its own); None for a method without D' or a run whose D' has not trained (``trained``:
    stage 2 has run)."""
    if not trained or not hasattr(method, "identity_critic"):
        return None
    sets = {"hr_train": faces.hr_train, "hr_test": faces.hr,
            "sr_genuine": batched(method.super_resolve, faces.genuine_test, method.device)}
    scores = {}
    for name, x in sets.items():
        p, cos = zip(*(method.identity_critic(chunk) for chunk in x.split(256)))
        scores[name] = (np.concatenate([t.cpu().numpy() for t in p]),
                        np.concatenate([t.cpu().numpy() for t in cos]))
    out: dict[str, Any] = {"sets": {k: {"n": len(p), "p_real": float(p.mean()), "centre_cos": float(c.mean())}
                                    for k, (p, c) in scores.items()}, "auc": {}}
    for a, b in PAIRS:
        value, low, high = auc_interval(scores[a][0], scores[b][0])
        out["auc"][f"{a}_vs_{b}"] = {"value": value, "low": low, "high": high,
                                     "chance_excluded": low > 0.5 or high < 0.5}
    return out
