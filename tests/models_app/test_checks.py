"""System checks (models_app/checks.py): each id fails on a bad setting and passes on a good one.

The checks run through Django's registry (`run_checks`), so a test also proves that
ModelsAppConfig.ready() registered them. `manage.py check` and `manage.py run` stop on them.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from models_app.models import Model

ROOT = Path(__file__).resolve().parents[2]


def issue_ids() -> list[str]:
    return [issue.id for issue in run_checks(tags=["modelyard"])]


def disk_size(path: Path) -> int:
    return shutil.disk_usage(path).total


def test_default_settings_pass():
    # The isolated store (tests/conftest.py) does not exist yet; its parent is writable.
    assert issue_ids() == []


# --- E001: the models store ---------------------------------------------------------------


def test_e001_passes_for_an_existing_writable_store(settings):
    settings.MODELS_HUB_DIR.mkdir(parents=True)
    assert issue_ids() == []


def test_e001_fails_when_the_store_cannot_be_created(settings, tmp_path):
    # Tests run as root here, and root writes through any chmod: a mode change cannot make
    # a directory unwritable for it. A regular file as the parent makes the store
    # impossible to create for everyone, root included.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    settings.MODELS_DIR = blocker / "models"
    settings.MODELS_HUB_DIR = blocker / "models" / "hub"
    issues = run_checks(tags=["modelyard"])
    assert [i.id for i in issues] == ["modelyard.E001"]
    assert f"{blocker} is not a directory" in issues[0].msg and "MODELS_DIR" in issues[0].hint


def test_e001_fails_when_the_store_is_a_file(settings, tmp_path):
    settings.MODELS_HUB_DIR.parent.mkdir(parents=True)
    settings.MODELS_HUB_DIR.write_text("")
    issues = run_checks(tags=["modelyard"])
    assert [i.id for i in issues] == ["modelyard.E001"]
    assert "is not a directory" in issues[0].msg


@pytest.fixture
def read_only_dir(tmp_path):
    """Return a directory on a real read-only filesystem (needs root to mount one).

    chmod does not stop root; a read-only mount does (EROFS).
    """
    point = tmp_path / "read-only"
    point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(point)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
    yield point
    subprocess.run(["umount", "-l", str(point)], check=False)


def test_e001_fails_when_the_parent_is_read_only(settings, read_only_dir):
    settings.MODELS_HUB_DIR = read_only_dir / "models" / "hub"
    settings.DOWNLOAD_DISK_RESERVE = 0  # more than the 1 MiB filesystem holds: E005
    issues = run_checks(tags=["modelyard"])
    assert [i.id for i in issues] == ["modelyard.E001"]
    assert f"{read_only_dir} is not writable" in issues[0].msg


# --- E002: HF_ENDPOINT ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint", ["https://huggingface.co", "http://127.0.0.1:8080", "https://hf-mirror.com/hub"]
)
def test_e002_passes_for_http_urls(settings, endpoint):
    settings.HF_ENDPOINT = endpoint
    assert issue_ids() == []


@pytest.mark.parametrize(
    "endpoint", ["huggingface.co", "ftp://mirror.example", "https://", "", "http://[::1"]
)
def test_e002_fails_for_anything_else(settings, endpoint):
    settings.HF_ENDPOINT = endpoint
    assert issue_ids() == ["modelyard.E002"]


# --- E003 to E005 and W001: quota and free-space floors -------------------------------------


def test_e003_passes_for_a_positive_quota_or_none(settings):
    settings.MODELS_MAX_BYTES = 1024**2
    assert issue_ids() == []
    settings.MODELS_MAX_BYTES = None
    assert issue_ids() == []


@pytest.mark.parametrize("quota", [-1, 0])
def test_e003_fails_for_a_quota_that_is_not_positive(settings, quota):
    # The environment turns MODELS_MAX_BYTES=0 into None; 0 here is a setting made in code.
    settings.MODELS_MAX_BYTES = quota
    assert issue_ids() == ["modelyard.E003"]


def test_e004_passes_for_zero_floors(settings):
    settings.MIN_FREE_BYTES = 0
    settings.DOWNLOAD_DISK_RESERVE = 0
    assert issue_ids() == []


@pytest.mark.parametrize("name", ["MIN_FREE_BYTES", "DOWNLOAD_DISK_RESERVE"])
def test_e004_fails_for_a_negative_floor(settings, name):
    setattr(settings, name, -1)
    issues = run_checks(tags=["modelyard"])
    assert [i.id for i in issues] == ["modelyard.E004"]
    assert issues[0].msg.startswith(f"{name} is -1")


@pytest.mark.parametrize("name", ["MIN_FREE_BYTES", "DOWNLOAD_DISK_RESERVE"])
def test_e005_passes_below_the_filesystem_size(settings, tmp_path, name):
    setattr(settings, name, disk_size(tmp_path) - 1)
    assert issue_ids() == []


@pytest.mark.parametrize("name", ["MIN_FREE_BYTES", "DOWNLOAD_DISK_RESERVE"])
def test_e005_fails_at_the_filesystem_size(settings, tmp_path, name):
    # The store does not exist yet: the check measures the filesystem it will be made on.
    setattr(settings, name, disk_size(tmp_path))
    assert issue_ids() == ["modelyard.E005"]


def test_w001_passes_when_quota_and_floor_fit(settings, tmp_path):
    total = disk_size(tmp_path)
    settings.MODELS_MAX_BYTES = total // 2
    settings.MIN_FREE_BYTES = total // 4
    assert issue_ids() == []


def test_w001_warns_when_quota_and_floor_exceed_the_disk(settings, tmp_path):
    total = disk_size(tmp_path)
    settings.MODELS_MAX_BYTES = total // 2 + 1
    settings.MIN_FREE_BYTES = total // 2
    issues = run_checks(tags=["modelyard"])
    assert [i.id for i in issues] == ["modelyard.W001"]
    assert not issues[0].is_serious()


# --- E006: django-q2 timeout and retry ------------------------------------------------------


def test_e006_passes_when_timeout_is_below_retry(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 60, "retry": 61}
    assert issue_ids() == []


@pytest.mark.parametrize(
    "timing",
    [{"timeout": 60, "retry": 60}, {"timeout": 120, "retry": 60}, {"timeout": None}, {}],
    ids=["equal", "above", "no-timeout", "defaults"],
)
def test_e006_fails_unless_timeout_is_below_retry(settings, timing):
    conf = {k: v for k, v in settings.Q_CLUSTER.items() if k not in ("timeout", "retry")}
    settings.Q_CLUSTER = {**conf, **timing}
    assert issue_ids() == ["modelyard.E006"]


# --- the commands that run them -------------------------------------------------------------


def test_manage_py_check_stops_on_a_failing_check(settings):
    settings.HF_ENDPOINT = "huggingface.co"
    with pytest.raises(SystemCheckError, match=r"\(modelyard\.E002\) HF_ENDPOINT"):
        call_command("check")


@pytest.mark.django_db
def test_run_refuses_to_start_on_a_failing_check(settings, capsys):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 60, "retry": 60}
    with pytest.raises(SystemExit) as info:
        call_command("run", "--no-worker")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("SystemCheckError: ") and "(modelyard.E006)" in err
    # It stopped before its first step, the registry sync.
    assert not Model.objects.exists()


def test_run_process_exits_2_with_the_check_report(tmp_path):
    env = dict(
        os.environ,
        DATABASE_URL=f"sqlite:///{tmp_path / 'run.sqlite3'}",
        MODELS_DIR=str(tmp_path / "models"),
        LEGACY_HUB_DIR=str(tmp_path / "no-legacy"),
        HF_ENDPOINT="ftp://mirror.example",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "run", "--no-worker"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "(modelyard.E002) HF_ENDPOINT 'ftp://mirror.example'" in result.stderr
    assert "HINT: Set HF_ENDPOINT" in result.stderr


# --- E007, E008, W002: the import and export roots ------------------------------------------


def test_file_roots_pass_when_absolute_existing_directories(settings, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    settings.IMPORT_ROOTS = [tmp_path / "in"]
    settings.EXPORT_ROOTS = [tmp_path / "out"]
    assert issue_ids() == []


@pytest.mark.parametrize("setting", ["IMPORT_ROOTS", "EXPORT_ROOTS"])
def test_e007_a_root_that_is_missing_relative_or_a_file(settings, tmp_path, setting):
    (tmp_path / "a-file").write_text("x")
    setattr(settings, setting, [tmp_path / "missing", Path("relative/dir"), tmp_path / "a-file"])
    issues = run_checks(tags=["modelyard"])
    assert [i.id for i in issues] == ["modelyard.E007"] * 3
    messages = [i.msg for i in issues]
    assert messages[0].endswith("does not exist.") and setting in messages[0]
    assert messages[1].endswith("is not an absolute path.")
    assert messages[2].endswith("is not a directory.")


def test_e008_an_export_root_that_is_not_writable(settings, tmp_path, monkeypatch):
    # As root (CI, this machine) every directory is writable, whatever its mode: the check
    # asks os.access, so the test answers for it that this one is not.
    out = tmp_path / "out"
    out.mkdir()
    settings.EXPORT_ROOTS = [out]
    real_access = os.access
    monkeypatch.setattr(
        "models_app.checks.os.access",
        lambda p, mode: False if Path(p) == out else real_access(p, mode),
    )
    assert issue_ids() == ["modelyard.E008"]


def test_w002_a_root_inside_or_around_the_models_store(settings, tmp_path):
    settings.MODELS_DIR.mkdir(parents=True)
    settings.IMPORT_ROOTS = [settings.MODELS_DIR]
    settings.EXPORT_ROOTS = [tmp_path]  # holds the store
    issues = run_checks(tags=["modelyard"])
    assert [i.id for i in issues] == ["modelyard.W002", "modelyard.W002"]
    assert "overlaps the models store" in issues[0].msg
