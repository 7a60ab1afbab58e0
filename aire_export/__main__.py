"""`python -m aire_export` is the `aire-export` command."""

from aire_export.cli import console_main

console_main()
