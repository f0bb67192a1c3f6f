"""lrfacebench: super-resolve genuine low-resolution faces (16x16 -> 64x64).

Data flow: source photos/frames -> detection -> filters -> dataset store + card ->
training stages -> checkpoints -> benchmark runs -> leaderboards and figures.
"""
__version__ = "0.1.0"
