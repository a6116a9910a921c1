"""Management commands: tokens, the first superuser, and `run` as a real process tree."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from models_app.models import ApiToken, token_digest
from tests.factories import UserFactory
from tests.processes import ProcessExited, free_port, wait_for_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_api_token_prints_a_working_token_once(capsys):
    UserFactory(username="ops", is_superuser=True)
    call_command("api_token", "ops", "--name", "deploy")
    raw = capsys.readouterr().out.strip()
    token = ApiToken.objects.get(name="deploy")
    assert token.digest == token_digest(raw) and raw not in token.digest


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("username", "superuser", "code"),
    [("nobody", False, "ERR_NOT_FOUND"), ("plain", False, "ERR_INVALID")],
)
def test_api_token_refusals(capsys, username, superuser, code):
    UserFactory(username="plain")
    with pytest.raises(SystemExit) as info:
        call_command("api_token", username)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f"{code}: ")
    assert not ApiToken.objects.exists()


@pytest.mark.django_db
def test_ensure_superuser_from_settings(settings, capsys):
    settings.MODELYARD_ADMIN_USER = "boss"
    settings.MODELYARD_ADMIN_PASSWORD = "s3cret-pw"
    call_command("ensure_superuser")
    boss = get_user_model().objects.get(username="boss")
    assert boss.is_superuser and boss.check_password("s3cret-pw")
    assert "s3cret-pw" not in capsys.readouterr().out
    call_command("ensure_superuser")
    assert "exists already" in capsys.readouterr().out
    assert get_user_model().objects.count() == 1


@pytest.mark.django_db
def test_ensure_superuser_generates_and_prints_a_password_once(settings, capsys):
    settings.MODELYARD_ADMIN_PASSWORD = ""
    call_command("ensure_superuser")
    out = capsys.readouterr().out
    password = out.split("Password: ")[1].split()[0]
    assert get_user_model().objects.get(username="admin").check_password(password)


def _migrated_run_env(tmp_path, **extra) -> dict:
    """Return the environment of a `manage.py run` on a fresh, migrated SQLite file."""
    env = dict(
        os.environ,
        DATABASE_URL=f"sqlite:///{tmp_path / 'run.sqlite3'}",
        MODELS_DIR=str(tmp_path / "models"),
        LEGACY_HUB_DIR=str(tmp_path / "no-legacy"),
        **extra,
    )
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    return env


def test_run_starts_daphne_and_a_worker_and_ctrl_c_stops_both(tmp_path):
    env = _migrated_run_env(tmp_path, Q_WORKERS="1", WEB_PROCESSES="2")
    manage = [sys.executable, "manage.py"]
    port = free_port()
    proc = subprocess.Popen(
        [*manage, "run", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        try:
            wait_for_url(f"http://127.0.0.1:{port}/admin/login/", timeout=60, proc=proc)
        except ProcessExited as exc:
            raise AssertionError(f"{exc}:\n{proc.stdout.read()}") from None
        children = psutil.Process(proc.pid).children(recursive=True)
        cmdlines = [" ".join(c.cmdline()) for c in children]
        daphnes = [c for c in children if "daphne" in " ".join(c.cmdline())]
        assert len(daphnes) == 2, cmdlines
        assert any("qcluster" in c for c in cmdlines), cmdlines
        # Both serve the one port: each has the listening socket.
        for daphne in daphnes:
            listening = [c.laddr.port for c in daphne.net_connections() if c.status == "LISTEN"]
            assert listening == [port], (daphne.cmdline(), listening)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], [c.cmdline() for c in alive]
        output = proc.stdout.read()
        assert "Registry synced" in output and "Store reconciled" in output
        assert "2 web processes" in output
    finally:
        if proc.poll() is None:
            proc.kill()


def test_run_refuses_a_port_in_use(tmp_path):
    env = _migrated_run_env(tmp_path)
    manage = [sys.executable, "manage.py"]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*manage, "run", "--port", str(port)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"ERR_INVALID: Cannot listen on 127.0.0.1:{port}")
    ), result.stderr


def test_models_is_one_command_with_every_subcommand():
    from django.core.management import CommandError, load_command_class

    parser = load_command_class("models_app", "models").create_parser("manage.py", "models")
    usage = parser.format_help()
    for name in ("add-custom", "import", "export", "verify", "repair", "update-check", "update"):
        assert name in usage
    for gone in ("models_import", "models_export", "models_add_custom"):
        with pytest.raises(CommandError, match="Unknown command"):
            call_command(gone)
