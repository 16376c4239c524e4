"""End to end on the real dagster-webserver and dagster-daemon (127.0.0.1, temporary DAGSTER_HOME,
the repository's dagster.yaml and workspace.yaml): failure notifications for runs launched
through the webserver and through `dagster job execute`, one run per environment, and a real
schedule tick."""

from __future__ import annotations

import json
import re
import time

from dbinit_pipeline_tests.test_operations.conftest import DagsterStack, about_run, fields_of

NOTIFY_WITHIN = 60.0
RUNNING = {"STARTING", "STARTED"}
RECREATE = {"ops": {"validate": {"config": {"if_exists": "recreate"}}}}


def _assert_failure_message(message: dict[str, object], stack: DagsterStack, run_id: str) -> None:
    fields = fields_of(message)
    assert fields["Environment"] == "broken"
    assert fields["Job"] == "initialize_broken"
    assert fields["Run id"] == run_id
    assert fields["Failed stage"] == "provision"
    assert "refused" in fields["Error"].lower() or "connect" in fields["Error"].lower(), fields["Error"]
    assert fields["Recovery suggestions"].startswith("• ")
    assert f"<{stack.url}/runs/{run_id}|" in str(message["text"]), "the text links to the run"
    body = json.dumps(message)
    for secret in (stack.env["OPS_PG_URL"], stack.env["OPS_BROKEN_URL"], stack.env["DAGSTER_PG_URL"]):
        password = secret.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        assert password not in body, "a password reached the notification"


def test_failure_of_a_run_launched_through_the_webserver_reaches_the_webhook(
    dagster_stack: DagsterStack,
) -> None:
    launched = time.monotonic()
    run_id = dagster_stack.launch("initialize_broken")
    message = dagster_stack.webhook.wait_for(about_run(run_id), timeout=NOTIFY_WITHIN)
    elapsed = time.monotonic() - launched
    assert dagster_stack.run(run_id)["status"] == "FAILURE"
    _assert_failure_message(message, dagster_stack, run_id)
    assert elapsed < NOTIFY_WITHIN


def test_failure_of_a_dagster_job_execute_run_reaches_the_webhook(dagster_stack: DagsterStack) -> None:
    result = dagster_stack.cli("job", "execute", "-m", "dbinit_pipeline", "-j", "initialize_broken")
    finished = time.monotonic()
    assert result.returncode == 1, result.stderr[-3000:]
    found = re.search(r"initialize_broken - ([0-9a-f-]{36}) - ", result.stderr + result.stdout)
    assert found, "dagster job execute printed no run id"
    run_id = found.group(1)
    message = dagster_stack.webhook.wait_for(about_run(run_id), timeout=NOTIFY_WITHIN)
    assert time.monotonic() - finished < NOTIFY_WITHIN
    _assert_failure_message(message, dagster_stack, run_id)
    assert dagster_stack.run(run_id)["status"] == "FAILURE"  # the CLI's run is in the daemon's instance


def test_second_run_of_an_environment_waits_while_another_environment_runs(
    dagster_stack: DagsterStack,
) -> None:
    first = dagster_stack.launch("initialize_alpha", RECREATE)
    second = dagster_stack.launch("initialize_alpha", RECREATE)
    other = dagster_stack.launch("initialize_beta", RECREATE)
    samples: list[tuple[str, str, str]] = []
    deadline = time.monotonic() + 150
    while True:
        statuses = tuple(dagster_stack.run(r)["status"] for r in (first, second, other))
        samples.append((statuses[0], statuses[1], statuses[2]))
        if all(s in {"SUCCESS", "FAILURE", "CANCELED"} for s in statuses):
            break
        assert time.monotonic() < deadline, f"runs did not finish: {samples[-5:]}"
        time.sleep(0.4)
    runs = {r: dagster_stack.run(r) for r in (first, second, other)}
    assert all(run["status"] == "SUCCESS" for run in runs.values()), samples[-5:]
    # never two runs of alpha at once ...
    assert not any(a in RUNNING and b in RUNNING for a, b, _ in samples), samples
    # ... one of them queued while the other ran alongside beta
    assert any({a, b} & RUNNING and {a, b} & {"QUEUED"} and c in RUNNING for a, b, c in samples), (
        f"never saw alpha queued while alpha and beta ran: {samples}"
    )
    one, two = sorted((runs[first], runs[second]), key=lambda run: run["startTime"])
    assert two["startTime"] >= one["endTime"], "the second alpha run started before the first ended"
    beta = runs[other]
    assert beta["startTime"] < one["endTime"] and one["startTime"] < beta["endTime"], "beta did not overlap"


def test_a_real_schedule_tick_launches_a_rebuild(dagster_stack: DagsterStack) -> None:
    # `* * * * *`: the daemon's scheduler ticks at the next minute boundary after it started.
    deadline = time.monotonic() + 150
    runs: list[dict[str, object]] = []
    while not runs:
        runs = dagster_stack.runs(tags=[{"key": "dagster/schedule_name", "value": "rebuild_nightly"}])
        assert runs or time.monotonic() < deadline, "no tick of rebuild_nightly launched a run"
        if not runs:
            time.sleep(2)
    run = dagster_stack.wait_finished(str(runs[-1]["runId"]))
    assert run["jobName"] == "initialize_nightly"
    assert run["status"] == "SUCCESS", dagster_stack.log_tail()
    assert "if_exists: recreate" in run["runConfigYaml"]
    assert {"key": "dbinit/trigger", "value": "rebuild"} in run["tags"]
    assert {"key": "dbinit/env", "value": "nightly"} in run["tags"]
    records = (dagster_stack.root / ".dbinit" / "operations.jsonl").read_text().splitlines()
    ours = [json.loads(line) for line in records if run["runId"] in line]
    assert any(r.get("status") == "success" for r in ours), ours
