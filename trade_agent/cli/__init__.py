"""The ``trade-agent`` command line (Typer sub-apps that parse options and call the library)."""
