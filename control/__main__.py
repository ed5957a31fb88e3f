"""`python -m control` is the `control` command (used where no console script is on PATH)."""

from control.entry import main

main()
