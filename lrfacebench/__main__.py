"""``python -m lrfacebench`` is ``lrfb``."""
from lrfacebench.cli import main

main(prog_name="lrfb")
