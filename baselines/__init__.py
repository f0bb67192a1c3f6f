"""Baseline methods behind the same Method interface as CR (installed as ``lrfacebench.baselines``)."""
