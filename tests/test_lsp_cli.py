import pytest

from lsp_server.__main__ import main
from xtc.core import defaults


@pytest.mark.parametrize("argv", [["--tcp", "0.0.0.0:2087"], ["--tcp", "192.168.1.5:2087"]])
def test_tcp_refuses_a_non_loopback_host_without_allow_remote(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "--allow-remote" in capsys.readouterr().err


def test_help_says_tcp_is_loopback_only(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "loopback" in capsys.readouterr().out


def test_invalid_log_level_in_the_environment_is_one_line_error(monkeypatch, capsys):
    monkeypatch.setenv(defaults.LSP_LOG_ENV, "chatty")
    with pytest.raises(SystemExit) as exit_:
        main(["--tcp", "127.0.0.1:2087"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "CHATTY" in err and "Traceback" not in err
