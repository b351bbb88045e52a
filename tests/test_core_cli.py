"""python -m core's printout: tiny metrics such as gnelbo (~1e-7) stay readable."""

import json

import core.train
from core.__main__ import main


def test_cli_prints_gnelbo_with_its_significant_digits(monkeypatch, capsys):
    final = {"kl": 0.123456, "gnelbo": 3.14159e-7, "jsd": 0.0, "iteration": 60, "done": True}
    monkeypatch.setattr(core.train, "train", lambda config, **kwargs: final)
    assert main(["--budget", "smoke"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["gnelbo"] == 3.1416e-7  # 4 decimals would print 0.0
    assert shown["kl"] == 0.1235 and shown["jsd"] == 0.0 and shown["iteration"] == 60 and shown["done"] is True
