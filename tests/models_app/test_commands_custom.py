"""manage.py registry_check_gguf and models add-custom, against the custom hub server."""

import io

import pytest
from django.core.management import call_command

from models_app.models import Model
from tests.custom_hub import (  # noqa: F401 (fixtures)
    BIG_REPO,
    LLM_REPO,
    custom_hub_fixture,
    hub_custom_fixture,
)

pytestmark = pytest.mark.django_db

REGISTRY = """\
models:
  - key: agrees
    repo_id: {llm}
    type: llm
    name: Agrees
    description: Its YAML says what its header says.
    quantization: Q4_K_M
    parameter_count: {params}
    context_window: 2048
    files: {{gguf: custom-llm-Q4_K_M.gguf}}
  - key: disagrees
    repo_id: {big}
    type: llm
    name: Disagrees
    description: Its YAML is wrong twice.
    quantization: Q5_K_M
    context_window: 8192
    files: {{gguf: big-Q4_K_M.gguf}}
  - key: missing
    repo_id: {llm}
    type: llm
    name: Missing
    description: Its file is not in the repo.
    files: {{gguf: custom-llm-Q2_K.gguf}}
"""


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_registry_check_gguf_reports_what_the_yaml_gets_wrong(hub_custom, settings, tmp_path):
    from models_app.gguf import gguf_facts, gguf_header_of

    source = hub_custom.root / LLM_REPO / "custom-llm-Q4_K_M.gguf"
    params = gguf_facts(gguf_header_of(source))["parameter_count"]
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "llm.yaml").write_text(
        REGISTRY.format(llm=LLM_REPO, big=BIG_REPO, params=params)
    )
    settings.REGISTRY_DIR = tmp_path / "registry"
    settings.MODEL_REGISTRY_FILES = []

    code, out, _ = run("registry_check_gguf")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("agrees: agrees (")
    assert "disagrees: context_window: the YAML says 8,192, the header 2,048" in lines
    assert "disagrees: quantization: the YAML says Q5_K_M, the header Q4_K_M" in lines
    assert any(line.startswith("missing: not read: ERR_NOT_FOUND") for line in lines)
    assert lines[-1] == "3 GGUF entries checked, 2 with a problem."
    assert hub_custom.bytes_sent("big-Q4_K_M.gguf") <= 256 * 1024  # of 50 MB

    code, out, _ = run("registry_check_gguf", "agrees")
    assert code == 0 and out.splitlines()[-1] == "1 GGUF entries checked, 0 with a problem."


def test_models_add_custom_lists_then_adds(hub_custom):
    code, out, _ = run("models", "add-custom", LLM_REPO)
    assert code == 0 and "custom-llm-Q8_0.gguf  Q8_0" in out and "fits: llm" in out
    assert not Model.objects.exists()

    code, out, _ = run("models", "add-custom", LLM_REPO, "--type", "llm", "--file",
                       "custom-llm-Q8_0.gguf")  # fmt: skip
    assert code == 0 and out == "Added custom-llm-q8_0 (custom-llm-GGUF): not installed.\n"
    assert Model.objects.get().source == "custom"


def test_models_add_custom_says_the_error_code(hub_custom):
    code, _, err = run("models", "add-custom", "acme/nothing", "--type", "llm")
    assert code == 2 and err.startswith("ERR_NOT_FOUND: ")
