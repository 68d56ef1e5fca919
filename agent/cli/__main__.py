"""`python -m agent.cli` runs the pgwarden command."""

from agent.cli import main

main()
