"""`python -m emca` is the `emca` command (emca/commands.py)."""

from emca.commands import main

main()
