"""`tunesmith ui`: the page's routes drive real (tiny) runs, and headless Chromium drives the page itself."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import write_intents
from test_report_browser import CHROMIUM, SHOTS
from tunesmith.ui import RunManager, UiConfig, build_ui_app


@pytest.fixture
def page(tmp_path: Path) -> TestClient:
    with TestClient(build_ui_app(RunManager(UiConfig(runs_dir=str(tmp_path / "runs"))))) as client:
        yield client


def form(tiny_model: str, data: Path, name: str = "first", **extra: Any) -> dict[str, Any]:
    return {"name": name, "train": str(data), "model": tiny_model, "epochs": 1, "batch_size": 8, "lr": 1e-3} | extra


def events(client: TestClient, name: str) -> list[tuple[str, dict[str, Any]]]:
    """The run's server-sent events, read until its `end` event."""
    out, kind = [], None
    with client.stream("GET", f"/api/runs/{name}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[len("data: ") :])))
    return out


def test_a_run_started_from_the_form_streams_to_its_end_and_reports(
    page: TestClient, tiny_model: str, tmp_path: Path
) -> None:
    data = write_intents(tmp_path / "intents.csv")
    started = page.post("/api/runs", json=form(tiny_model, data))
    assert started.status_code == 201, started.text
    assert started.json()["state"] == "running"
    seen = events(page, "first")
    kinds = [k for k, _ in seen]
    assert kinds[-1] == "end" and seen[-1][1]["state"] == "finished", seen[-1]
    log = [json.loads(line) for line in (tmp_path / "runs" / "first" / "log.jsonl").read_text().splitlines()]
    assert [d for k, d in seen if k in ("train", "eval")] == log  # every line, once, in order
    assert kinds.count("eval") >= 1
    end = seen[-1][1]
    assert end["metric"] == "macro_f1" and 0 <= end["score"] <= 1 and end["report"]
    listed = page.get("/api/runs").json()["runs"]
    assert [(r["name"], r["state"], r["task"]) for r in listed] == [("first", "finished", "classification")]
    report = page.get("/runs/first/report")
    assert report.status_code == 200 and "<h2>Scores</h2>" in report.text
    tried = page.post("/api/runs/first/try", json={"text": "where is my parcel"})
    assert tried.status_code == 200, tried.text
    labels = set(json.loads((tmp_path / "runs" / "first" / "label_map.json").read_text())["labels"])
    assert tried.json()["kind"] == "classify" and tried.json()["prediction"]["label"] in labels
    too_long = page.post("/api/runs/first/try", json={"text": "x" * 20_001})
    assert too_long.status_code == 400 and "text:" in too_long.json()["error"]


def write_chats(path: Path) -> Path:
    pairs = [("hello how are you", "I am fine"), ("你好", "你好，今天天气很好。"), ("capital of France?", "Paris")]
    rows = [
        {"messages": [{"role": "user", "content": f"{q} {i}"}, {"role": "assistant", "content": a}]}
        for i in range(24)
        for q, a in [pairs[i % len(pairs)]]
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_finished_sft_run_chats_with_its_history(page: TestClient, tiny_lm: str, tmp_path: Path) -> None:
    chats = write_chats(tmp_path / "chats.jsonl")
    sft = form(tiny_lm, chats, name="chat", task="sft", method="lora", lr=5e-3)
    assert page.post("/api/runs", json=sft).status_code == 201
    busy = page.post("/api/runs/chat/try", json={"text": "你好"})
    assert busy.status_code == 409 and "has not finished" in busy.json()["error"]
    assert events(page, "chat")[-1][1]["state"] == "finished"
    history = [{"role": "user", "content": "你好 1"}, {"role": "assistant", "content": "你好，今天天气很好。"}]
    reply = page.post("/api/runs/chat/try", json={"text": "capital of France? 2", "history": history})
    assert reply.status_code == 200, reply.text
    assert reply.json()["kind"] == "chat" and isinstance(reply.json()["answer"], str)
    wrong = page.post("/api/runs/chat/try", json={"text": "hi", "history": [{"role": "system", "content": "x"}]})
    assert wrong.status_code == 400 and "history" in wrong.json()["error"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"name": "../escape"}, "name:"),
        ({"name": ""}, "name:"),
        ({"train": "nowhere.csv"}, "train: nowhere.csv is not a file"),
        ({"task": "poetry"}, "task: one of"),
        ({"method": "magic"}, "method: one of"),
        ({"epochs": -1}, "epochs:"),
        ({"lr": 5}, "lr:"),
        ({"unknown": 1}, "unknown:"),
    ],
)
def test_a_bad_form_is_one_line_and_starts_nothing(
    page: TestClient, tiny_model: str, tmp_path: Path, change: dict[str, Any], needle: str
) -> None:
    data = write_intents(tmp_path / "intents.csv")
    answer = page.post("/api/runs", json=form(tiny_model, data) | change)
    assert answer.status_code == 400, answer.text
    assert needle in answer.json()["error"] and "\n" not in answer.json()["error"]
    assert page.get("/api/runs").json()["runs"] == []


def test_a_run_that_fails_ends_with_its_own_error_line(page: TestClient, tmp_path: Path) -> None:
    data = write_intents(tmp_path / "intents.csv")
    assert page.post("/api/runs", json=form("no-such-model", data, name="broken")).status_code == 201
    end = events(page, "broken")[-1][1]
    assert end["state"] == "failed" and end["code"] == 2, end
    assert end["error"].startswith("tunesmith: error:") and "no-such-model" in end["error"]
    listed = {r["name"]: r["state"] for r in page.get("/api/runs").json()["runs"]}
    assert listed == {"broken": "failed"}


def test_an_existing_folder_is_never_replaced(page: TestClient, tiny_model: str, tmp_path: Path) -> None:
    mine = tmp_path / "runs" / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("the user's", encoding="utf-8")
    answer = page.post("/api/runs", json=form(tiny_model, write_intents(tmp_path / "i.csv"), name="mine"))
    assert answer.status_code == 400 and "exists" in answer.json()["error"]
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_one_training_at_a_time_and_stop_ends_it_resumably(page: TestClient, tiny_model: str, tmp_path: Path) -> None:
    """Fails before: Stop sent SIGINT, which a page started in the background of a script (where the shell
    ignores SIGINT, and its children inherit that) could not deliver: the run trained on to its end."""
    data = write_intents(tmp_path / "intents.csv", per_class=60)
    long = form(tiny_model, data, name="long", epochs=90)
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `tunesmith ui &` in a script starts it
    try:
        assert page.post("/api/runs", json=long).status_code == 201
    finally:
        signal.signal(signal.SIGINT, ignored)
    busy = page.post("/api/runs", json=form(tiny_model, data, name="second"))
    assert busy.status_code == 409 and "already running" in busy.json()["error"]
    # Past the first checkpoint, so there is one to resume from. Waiting for the "eval" log line raced: that line
    # is written before the checkpoint that follows it, and a stop in between left none (2 of 7 runs, loaded).
    checkpoint = tmp_path / "runs" / "long" / "checkpoints" / "last" / "state.json"
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    stopped = page.post("/api/runs/long/stop")
    assert stopped.status_code == 200
    end = events(page, "long")[-1][1]
    assert end["state"] == "stopped" and "interrupted" in end["error"], end
    assert page.post("/api/runs/long/stop").status_code == 409  # not running any more
    saved = _steps(tmp_path / "runs" / "long")  # the checkpoint a --resume continues from
    assert 0 < saved < 90 * 18


def _steps(run: Path) -> int:
    return json.loads((run / "checkpoints" / "last" / "state.json").read_text())["step"]


@pytest.mark.parametrize("name", ["nobody", "..", "%2e%2e%2fetc"])
def test_only_runs_under_the_runs_folder_are_read(page: TestClient, name: str) -> None:
    for route in (f"/api/runs/{name}", f"/api/runs/{name}/events", f"/runs/{name}/report"):
        assert page.get(route).status_code == 404, route


def test_the_page_is_whole_by_itself(page: TestClient) -> None:
    html = page.get("/").text
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html), "nothing fetched from outside"
    assert 'id="start"' in html and "EventSource" in html
    assert set(page.get("/api/choices").json()) == {"tasks", "methods", "models"}


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium")
def test_the_page_in_chromium_starts_watches_tries_and_opens_runs(
    tiny_model: str, tiny_lm: str, tmp_path: Path
) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    data = write_intents(tmp_path / "intents.csv")
    command = [sys.executable, "-m", "tunesmith", "ui", "--port", "0", "--runs-dir", str(tmp_path / "runs")]
    ui = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    try:
        url = _address(ui)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            outside: list[str] = []
            tab.on("request", lambda r: None if r.url.startswith(url) else outside.append(r.url))
            tab.goto(url)
            tab.fill("input[name=name]", "from-the-page")
            tab.fill("input[name=train]", str(data))
            tab.fill("input[name=model]", tiny_model)
            tab.fill("input[name=epochs]", "2")
            tab.fill("input[name=batch_size]", "8")
            tab.fill("input[name=lr]", "0.001")
            tab.click("#go")
            tab.wait_for_function("document.getElementById('status').textContent.includes('finished')", timeout=180_000)
            assert tab.locator("#evals li").count() == 2  # one evaluation per epoch, as they came
            assert tab.locator("#loss").get_attribute("points").count(",") > 5  # the live loss curve
            SHOTS.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(SHOTS / "ui.png"), full_page=True)
            tab.select_option("#tryrun", "from-the-page")
            tab.fill("#trytext", "where is my parcel")
            tab.click("#send")
            tab.wait_for_function("document.querySelectorAll('#answers p').length === 2")
            assert tab.locator("#answers p").nth(1).inner_text().startswith("from-the-page: ")
            with tab.expect_popup() as opened:
                tab.click("tr[data-run='from-the-page'] a")
            report = opened.value
            report.wait_for_load_state()
            assert "Scores" in report.locator("h2").all_inner_texts()
            # a chat run, started and tried from the same page
            tab.fill("input[name=name]", "chat")
            tab.fill("input[name=train]", str(write_chats(tmp_path / "chats.jsonl")))
            tab.select_option("#task", "sft")
            tab.fill("input[name=model]", tiny_lm)
            tab.select_option("#method", "lora")
            tab.fill("input[name=epochs]", "1")
            tab.fill("input[name=lr]", "0.005")
            tab.click("#go")
            chat_done = "document.getElementById('status').textContent.startsWith('chat: finished')"
            tab.wait_for_function(chat_done, timeout=180_000)
            tab.wait_for_function("[...document.querySelectorAll('#tryrun option')].some(o => o.value === 'chat')")
            tab.select_option("#tryrun", "chat")
            for shown, question in ((2, "你好 1"), (4, "hello how are you 2")):
                tab.fill("#trytext", question)
                tab.click("#send")
                tab.wait_for_function(f"document.querySelectorAll('#answers p').length === {shown}")
            assert [p.split(":")[0] for p in tab.locator("#answers p").all_inner_texts()] == ["you", "chat"] * 2
            tab.screenshot(path=str(SHOTS / "ui-chat.png"), full_page=True)
            browser.close()
        assert outside == []
    finally:
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=60) == 0


def _address(ui: subprocess.Popen) -> str:
    assert ui.stderr is not None
    for line in ui.stderr:
        found = re.search(r"tunesmith ui on (http://\S+)", line)
        if found:
            return found.group(1)
    raise AssertionError(f"the ui never said where it listens (exit {ui.wait()})")
