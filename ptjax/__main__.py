"""`python -m ptjax`: the ptjax command (ptjax/console.py)."""

from ptjax.console import main

main()
