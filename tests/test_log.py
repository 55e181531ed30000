import logging

import pytest

from trade_agent.log import setup_logging


def test_console_log_follows_the_current_stderr(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    setup_logging(log_file=tmp_path / "training.log")
    logging.getLogger("trade_agent.test").warning("first")
    assert "first" in capsys.readouterr().err
    logging.getLogger("trade_agent.test").warning("second")  # capsys swapped sys.stderr in between
    assert "second" in capsys.readouterr().err
