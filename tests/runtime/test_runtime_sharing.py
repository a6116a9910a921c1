"""Every web process of every host reaches the one runner that has a model (issue 11, items 1, 10).

Real processes: runtime supervisors standing for hosts (HOST_NAME), daphne processes, the
runners of the real Gemma 3 270M GGUF, all on the test's database.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest

from models_app.models import Event, Operation, RuntimeInstance
from models_app.runtime.processes import RUNNER_MODULE
from models_app.services.runtime import runtime_load_start
from tests.processes import wait_until
from tests.runtime_helpers import V1Stream, api_call, children_running, v1_post, wait_ready

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.runtime]

LOAD_HEADER = "X-Modelyard-Load-Seconds"
GEMMA_EOS = 1  # tokenizer.ggml.eos_token_id of the Gemma file


def completion(model, prompt: str = "The capital of France is") -> dict:
    return {"model": model.key, "prompt": prompt, "max_tokens": 4, "temperature": 0}


def test_two_web_processes_share_one_runner(gemma, processes, superuser_token):
    processes.runtime()
    webs = [processes.web(), processes.web()]

    # Both ask at once for a model that is not loaded: one JIT load serves both.
    with ThreadPoolExecutor(len(webs)) as pool:
        first = list(
            pool.map(lambda w: v1_post(w.port, superuser_token, "completions", completion(gemma)),
                     webs)
        )  # fmt: skip
    for status, _, answer in first:
        assert status == 200, answer
        assert answer["usage"]["completion_tokens"] > 0
    assert max(float(headers[LOAD_HEADER]) for _, headers, _ in first) > 0  # someone waited

    # And once more through each, in turn: the model is loaded now.
    for web in webs:
        status, headers, answer = v1_post(web.port, superuser_token, "completions",
                                          completion(gemma, "Two plus two is"))  # fmt: skip
        assert status == 200, answer
        assert float(headers[LOAD_HEADER]) == 0

    (instance,) = RuntimeInstance.objects.filter(model=gemma)
    assert instance.state == "ready"
    assert instance.requests_served == 4 and instance.in_flight == 0
    assert Operation.objects.filter(model=gemma, kind="load").count() == 1
    assert Event.objects.filter(model=gemma, kind="loaded").count() == 1
    # Its runner and the spare: never a second copy of the model.
    assert instance.pid in {p.pid for p in processes.runners()}
    assert len(processes.runners()) <= 2


def test_a_request_through_host_a_reaches_the_runner_of_host_b(
    gemma, gemma_entry, processes, superuser_token
):
    host_a = processes.runtime(host="host-a")
    host_b = processes.runtime(host="host-b")
    web_a = processes.web(host="host-a")  # a web process of host A

    status, body = api_call(web_a.port, superuser_token, "POST", "/runtime/load",
                            {"model": gemma.key, "host": "host-b"})  # fmt: skip
    assert status == 202, body
    on_b = wait_ready(gemma)
    assert on_b.host == "host-b"
    assert on_b.pid in {p.pid for p in children_running(host_b.pid, RUNNER_MODULE)}
    # The service names the host too: a second model, on host A.
    other = gemma_entry("gemma-3-270m-on-a")
    assert runtime_load_start(model=other, host="host-a").http_status == 202
    on_a = wait_ready(other)
    assert on_a.host == "host-a"
    assert on_a.pid in {p.pid for p in children_running(host_a.pid, RUNNER_MODULE)}

    for model in (gemma, other):
        status, headers, answer = v1_post(web_a.port, superuser_token, "completions",
                                          completion(model))  # fmt: skip
        assert status == 200, answer
        assert float(headers[LOAD_HEADER]) == 0  # loaded where it was: no JIT load here
    assert RuntimeInstance.objects.get(pk=on_b.pk).requests_served == 1
    assert RuntimeInstance.objects.get(pk=on_a.pk).requests_served == 1

    status, runtime = api_call(web_a.port, superuser_token, "GET", "/runtime")
    assert status == 200, runtime
    hosts = {h["host"]: h for h in runtime["hosts"]}
    assert set(hosts) == {"host-a", "host-b"}
    for name, pid in (("host-a", host_a.pid), ("host-b", host_b.pid)):
        host = hosts[name]
        assert host["pid"] == pid and host["fresh"]
        assert host["ram_total"] > 0 and 0 < host["ram_available"] <= host["ram_total"]
        assert host["budget"] > 0 and host["threads"] >= 1 and host["max_loaded"] >= 1
        assert host["loaded"] == 1
    assert {(i["model"], i["host"], i["state"]) for i in runtime["instances"]} == {
        (gemma.key, "host-b", "ready"),
        (other.key, "host-a", "ready"),
    }


def test_a_load_on_a_host_without_a_runtime_is_refused(gemma, processes, superuser_token):
    processes.runtime(host="host-a")
    web = processes.web(host="host-a")
    status, body = api_call(web.port, superuser_token, "POST", "/runtime/load",
                            {"model": gemma.key, "host": "host-z"})  # fmt: skip
    assert status == 503, body
    assert body["code"] == "ERR_UNAVAILABLE" and body["details"] == {"host": "host-z"}
    assert not Operation.objects.filter(kind="load").exists()


def test_requests_at_once_through_two_web_processes_all_complete(gemma, processes, superuser_token):
    """The runner serves one request at a time: a second one waits, it never cuts the first
    short (llama-cpp-python's server interrupts a stream when another request waits, unless
    told not to)."""
    processes.runtime()
    webs = [processes.web(), processes.web()]
    runtime_load_start(model=gemma)
    wait_ready(gemma)
    tokens = 16
    stream = V1Stream(webs[0].port, superuser_token, "completions", {
        "model": gemma.key, "prompt": "Once upon a time", "max_tokens": tokens,
        "logit_bias": {str(GEMMA_EOS): -100},
    })  # fmt: skip
    try:
        assert stream.status == 200
        events = [stream.event()]
        assert events[0] is not None
        with ThreadPoolExecutor(1) as pool:
            other = pool.submit(v1_post, webs[1].port, superuser_token, "completions",
                                completion(gemma))  # fmt: skip
            wait_until(
                lambda: RuntimeInstance.objects.filter(model=gemma, in_flight=2).exists(),
                timeout=10, what="the second request to reach the instance",
            )  # fmt: skip
            while (event := stream.event()) is not None:
                events.append(event)
            status, _, answer = other.result(timeout=60)
    finally:
        stream.close()
    assert status == 200, answer
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    # One event per token: all of them came, though a request waited meanwhile.
    assert len([e for e in events if e["choices"][0]["text"]]) >= tokens - 1
