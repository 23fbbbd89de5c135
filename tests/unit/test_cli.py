"""The command line as an operator meets it: help, version, --config placement, errors without tracebacks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker import cli

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = ["local", "check-config", "daemon", "checkpoints", "replay", "fixtures"]


def worker(*args, env=None, cwd=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith("WORKER")}
    base.update(AWS_EC2_METADATA_DISABLED="true")
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        cwd=cwd or ROOT,
        check=False,
    )


def help_of(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_is_plain_text_and_hides_kcl(capsys):
    out = help_of(capsys)
    for markup in ("``", ":mod:", ":class:", ":func:"):
        assert markup not in out
    for name in PUBLIC:
        assert f"\n    {name}" in out
    assert "kcl" not in out.split("options:")[0].split("COMMAND\n", 1)[1]
    assert "examples:" in out


@pytest.mark.parametrize("name", PUBLIC)
def test_every_command_has_a_description_and_examples(capsys, name):
    out = help_of(capsys, name)
    assert "examples:" in out
    assert f"worker {name}" in out.split("examples:")[1]
    assert "--config FILE" in out
    assert "``" not in out


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"worker {version('worker')}"


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{cfg}", "checkpoints", "show"],
        ["checkpoints", "--config", "{cfg}", "show"],
        ["checkpoints", "show", "--config", "{cfg}"],
        ["checkpoints", "reset", "--to", "latest", "--config", "{cfg}"],
        ["--config", "{cfg}", "replay", "--since", "1h"],
        ["replay", "--since", "1h", "--config", "{cfg}"],
        ["fixtures", "record", "--table", "T", "--out", "x", "--config", "{cfg}"],
        ["--config", "{cfg}", "check-config"],
        ["check-config", "--config", "{cfg}"],
        ["kcl", "--config", "{cfg}"],
        ["daemon", "--config", "{cfg}"],
        ["local", "--config", "{cfg}"],
    ],
)
def test_config_is_accepted_before_or_after_the_action(argv):
    argv = [a.format(cfg="/x/w.toml") for a in argv]
    args = cli.parser().parse_args(argv)
    from worker.commands import config_path

    assert config_path(args) == "/x/w.toml"
    # The parser of the named command alone reads the same arguments.
    only = cli.parser(cli.command_of(argv)).parse_args(argv)
    assert {k: v for k, v in vars(only).items() if k != "run"} == {k: v for k, v in vars(args).items() if k != "run"}
    assert only.run.__module__ == args.run.__module__ == f"worker.commands.{args.command.replace('-', '_')}"


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["kcl", "--config", "w.toml"], "kcl"),
        (["--config", "kcl", "local"], "local"),  # a file named like a command is --config's value
        (["--conf", "kcl", "local"], "local"),  # argparse's prefix of --config
        (["--config=kcl", "--debug", "check-config", "--probe"], "check_config"),
        (["--debug", "replay", "--since", "1h"], "replay"),
        (["--version"], None),
        ([], None),
        (["nosuch", "kcl"], None),  # an unknown command: the full parser says so
        (["--", "kcl"], None),
    ],
)
def test_the_named_command_is_read_as_the_parser_reads_it(argv, command):
    assert cli.command_of(argv) == command


def test_a_shard_process_imports_only_its_own_command():
    code = (
        "import sys; from worker import cli; cli.parser(cli.command_of(['kcl'])).parse_args(['kcl']); "
        "print(sorted(m for m in sys.modules if m.startswith('worker.commands.') or m == 'importlib.metadata'))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert run.stdout.strip() == "['worker.commands.kcl']"


def test_an_unknown_command_is_refused_naming_every_command():
    run = worker("nosuch")
    assert run.returncode == 2
    assert "invalid choice: 'nosuch'" in run.stderr
    for name in [*PUBLIC, "kcl", "backfill"]:
        assert f"'{name}'" in run.stderr


def test_config_flag_beats_worker_config_which_beats_nothing(monkeypatch):
    from worker.commands import config_path

    monkeypatch.setenv("WORKER_CONFIG", "/env/w.toml")
    assert config_path(cli.parser().parse_args(["checkpoints", "show"])) == "/env/w.toml"
    assert config_path(cli.parser().parse_args(["checkpoints", "show", "--config", "/flag.toml"])) == "/flag.toml"
    monkeypatch.delenv("WORKER_CONFIG")
    assert config_path(cli.parser().parse_args(["checkpoints", "show"])) is None


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["check-config", "--config", "no/such.toml"], {}, "configuration file not found"),
        (["check-config"], {"WORKER__PIPELINE__RETRY_ATTEMPTS": "x"}, "WORKER__PIPELINE__RETRY_ATTEMPTS"),
        (["check-config"], {"WORKER__WORKER__TABLE": "Orders"}, "worker.region"),
        (["--config", "config/local.toml", "replay", "--since", "yesterday"], {}, "--since"),
    ],
)
def test_anticipated_errors_exit_2_without_a_traceback(args, env, expected):
    run = worker(*args, env={"AWS_REGION": "", "AWS_DEFAULT_REGION": "", **env})
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert expected in run.stderr


def test_environment_alone_is_a_complete_configuration():
    env = {
        "AWS_REGION": "eu-central-1",
        "WORKER__WORKER__TABLE": "Orders",
        "WORKER__SEARCH__URL": "https://admin:s3cr3t@search.internal:9200",
        "WORKER__SEARCH__AUTH": "basic",
        "WORKER__SEARCH__USERNAME": "admin",
        "WORKER__SEARCH__PASSWORD": "12345",
        "WORKER__ARCHIVE__BUCKET": "orders-archive",
    }
    run = worker("check-config", "--print", env=env)
    assert run.returncode == 0, run.stderr
    import tomllib

    printed = tomllib.loads(run.stdout.split("\n(environment only)")[0])
    assert printed["worker"] == {**printed["worker"], "table": "Orders", "region": "eu-central-1"}
    assert printed["kcl"]["application_name"] == "worker-Orders"
    assert printed["archive"]["bucket"] == "orders-archive"
    assert printed["search"]["password"] == "***"
    assert printed["search"]["url"] == "https://admin:***@search.internal:9200"
    assert "12345" not in run.stdout + run.stderr and "s3cr3t" not in run.stdout + run.stderr
    assert "(environment only): ok" in run.stdout


def test_the_old_port_variable_is_refused_when_it_disagrees(tmp_path):
    cfg = tmp_path / "w.toml"
    arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/Orders/stream/2026-01-01T00:00:00.000"
    cfg.write_text(f'[worker]\ntable = "Orders"\nregion = "eu-west-1"\n[kcl]\nstream_arn = "{arn}"\nhttp_port = 9555\n')
    run = worker("daemon", "--config", str(cfg), env={"WORKER_HTTP_PORT": "9400", "WORKER_KCL_JAVA": "/nonexistent"})
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "WORKER_HTTP_PORT" in run.stderr and "WORKER__KCL__HTTP_PORT" in run.stderr
