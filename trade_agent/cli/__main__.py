"""``python -m trade_agent.cli`` (same as the ``trade-agent`` console script)."""

from trade_agent.cli.main import main

main()
