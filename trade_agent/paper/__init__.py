"""Paper trading: a model trades a SQLite ledger bar by bar (``trade-agent paper``)."""
