from __future__ import annotations

import argparse


def test_serve_subcommand_accepts_host_port_and_data_dir(tmp_path, monkeypatch):
    """`aieval serve --host --port --data-dir` as the engine's CLI will load it from the aieval.commands group."""
    from aieval_server import cli

    calls = []
    monkeypatch.setattr(cli, "serve", lambda host, port, **kw: calls.append((host, port, kw)) or 0)
    monkeypatch.delenv("AIEVAL_DATA_DIR", raising=False)
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=str(tmp_path / "top"))
    cli.add_serve_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "18123", "--data-dir", str(tmp_path / "d")])
    assert args.handler(args) == 0
    assert calls == [("0.0.0.0", 18123, {"worker": True, "concurrency": 1})]
    import os

    assert os.environ["AIEVAL_DATA_DIR"] == str((tmp_path / "d").resolve())
