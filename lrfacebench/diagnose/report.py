"""The human-readable report of a diagnosis (the dict :func:`lrfacebench.diagnose.diagnose` returns)."""
from __future__ import annotations

from typing import Any

from lrfacebench.diagnose.metrics_log import GRAD_NORM_RATIO, TAIL, kind_of


def _num(v: float | int | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _render_residuals(res: dict[str, Any] | None) -> list[str]:
    if res is None:
        return ["phi_cr residual: not applicable (the method has no phi_cr)"]
    lines = ["phi_cr residual r = phi_cr(x) - x, [-1,1] units",
             f"  {'faces':<13} {'n':>5} {'rms':>9} {'fixed share':>12}"]
    labels = {"genuine_test": "genuine test", "genuine_train": "genuine train", "artificial": "artificial"}
    for key, label in labels.items():
        s = res[key]
        lines.append(f"  {label:<13} {s['n']:>5} {s['rms']:>9.4f} {s['fixed_share']:>12.3f}")
    verdict = "ok" if res["artificial_rms_ok"] else "TOO LARGE"
    lines.append(f"  phi_cr(x_a) vs x_a RMS {res['artificial']['rms']:.4f} "
                 f"(limit {res['artificial_rms_limit']}): {verdict}")
    return lines


def _render_table5(t5: dict[str, Any] | None) -> list[str]:
    if t5 is None:
        return ["Table 5: not applicable (the method has no phi_cr)"]
    def verdict(m: str) -> str:
        d = t5["delta"][m]
        closer = "closer" if t5["regulated_closer"][m] else "NOT closer"
        return f"{closer}, {'interval excludes 0' if d['significant'] else 'not significant'}"
    def delta(m: str, fmt: str) -> str:
        d = t5["delta"][m]
        return f"{d['value']:+{fmt}} [{d['low']:+{fmt}}, {d['high']:+{fmt}}]"
    return [f"Table 5: distance to artificial LR (DS of {t5['n_artificial']} HR test faces), "
            f"{t5['n_genuine']} genuine test faces; 95 % paired bootstrap intervals over them",
            f"  {'':<22} {'FID':>9} {'KID':>9}",
            f"  {'G-LR x':<22} {t5['genuine']['fid']:>9.2f} {t5['genuine']['kid']:>9.4f}",
            f"  {'R-LR phi_cr(x)':<22} {t5['regulated']['fid']:>9.2f} {t5['regulated']['kid']:>9.4f}",
            f"  R-LR - G-LR by FID {delta('fid', '.2f')}: regulated faces {verdict('fid')}",
            f"  R-LR - G-LR by KID {delta('kid', '.4f')}: regulated faces {verdict('kid')}"]


def _render_critic(critic: dict[str, Any] | None) -> list[str]:
    if critic is None:
        return ["identity critic D': not applicable (no D', or stage 2 has not run)"]
    labels = {"hr_train": "HR train (phi_fr's ids)", "hr_test": "HR test (unseen ids)", "sr_genuine": "SR of genuine"}
    lines = ["identity critic D' (Eq. 8): P(real) and cosine to the nearest CentreFace centre",
             f"  {'faces':<25} {'n':>5} {'P(real)':>8} {'centre cos':>11}"]
    lines += [f"  {labels[k]:<25} {s['n']:>5} {s['p_real']:>8.3f} {s['centre_cos']:>11.3f}"
              for k, s in critic["sets"].items()]
    for key, a in critic["auc"].items():
        first, second = key.split("_vs_")
        lines.append(f"  AUC P(D'({labels[first]}) > D'({labels[second]})) {a['value']:.3f} "
                     f"[{a['low']:.3f}, {a['high']:.3f}]{'' if a['chance_excluded'] else ': chance not excluded'}")
    lines.append("  a realism critic: first AUC near 0.5; an identity-membership critic: first AUC near the third")
    return lines


def _render_bn(bn: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["batch norm: input batch statistics vs running statistics, channel means "
             "(train mode | eval mode)",
             f"  {'layer':<28} {'mean gap':>9} {'gap/sd':>8} {'var rel':>8} | {'gap/sd':>8} {'var rel':>8}"]
    for name, r in bn.items():
        if "skipped" in r:
            lines.append(f"  {name}: skipped: {r['skipped']}")
            continue
        note = f"; {r['note']}" if "note" in r else ""
        lines.append(f"  {name} ({r['input']}, {r['n']} faces): output gap mean|f_train - f_eval| "
                     f"{r['output_gap']:.4g}{note}")
        lines += [f"    {x['layer']:<26} {x['mean_gap']:>9.4f} {x['mean_gap_sd']:>8.3f} "
                  f"{x['var_gap_rel']:>8.3f} | {x['eval_mean_gap_sd']:>8.3f} {x['eval_var_gap_rel']:>8.3f}"
                  for x in r["layers"]]
    return lines


def _render_metrics(metrics: dict[str, Any]) -> list[str]:
    if not metrics["stages"]:
        return ["metrics.csv: no rows yet"]
    w = max(len(n) for names in metrics["stages"].values() for n in names)
    lines = [f"metrics.csv (tail = mean of the last {TAIL:.0%} of rows)",
             f"  {'stage':<11} {'name':<{w}} {'n':>4} {'first':>10} {'last':>10} {'tail':>10} "
             f"{'min':>10} {'max':>10}"]
    for stage, names in metrics["stages"].items():
        lines += [f"  {stage:<11} {name:<{w}} {s['n']:>4} {_num(s['first']):>10} {_num(s['last']):>10} "
                  f"{_num(s['tail_mean']):>10} {_num(s['min']):>10} {_num(s['max']):>10}"
                  for name, s in names.items()]
    gn = [n for names in metrics["stages"].values() for n in names if kind_of(n) == "grad_norm"]
    if not gn:
        lines.append("  loss-scale check: no gradient norms (gn_*) logged")
    elif not metrics["grad_norm_flags"]:
        lines.append(f"  loss-scale check: no term's last gradient norm is > {GRAD_NORM_RATIO:g}x another's "
                     "on the same net")
    lines += [f"  loss-scale check FAILED in {f['stage']}: on {f['net'] or 'the shared nets'} the "
              f"gradient norm of {f['large']} is {f['ratio']:.3g}x that of {f['small']}"
              for f in metrics["grad_norm_flags"]]
    return lines


def render(report: dict[str, Any]) -> str:
    """The human-readable report of :func:`diagnose`'s dict."""
    faces = ", ".join(f"{k} {v['n']} from {v['source']}" for k, v in report["faces"].items())
    lr = report["lr_consistency"]
    lines = [f"run {report['run']}: {report['method']} (variant {report['variant']}, preset "
             f"{report['preset']}), {'finished' if report['finished'] else 'unfinished'}; "
             f"weights {report['weights']}",
             f"faces: {faces}", "", *_render_residuals(report["phi_cr_residual"]), "",
             f"LR consistency mean |DS(SR) - x| on genuine test faces, [0,1] units: {lr['mean']:.4f} "
             f"({lr['n']} faces)", "", *_render_table5(report.get("table5")), "",
             *_render_critic(report.get("identity_critic")), "",
             *_render_bn(report["batch_norm"]), "", *_render_metrics(report["metrics"])]
    if "files" in report:
        lines += ["", f"wrote {report['files']['json']} and {report['files']['png']}"]
    return "\n".join(lines)
