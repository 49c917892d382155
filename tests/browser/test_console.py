"""The console in Chromium against a real hub: chat, images, keys, usage, lifecycle badges."""

from __future__ import annotations

import base64
import csv
import io
import json

import httpx
from PIL import Image
from playwright.sync_api import Page, expect

from tests.api.test_mistral_e2e import BOUNDED_WEATHER
from tests.browser.conftest import DEMO_MODEL, MISTRAL, SUNSET, sign_in

QUESTION = "What is the capital of France?"
CITIES = "Name three large cities in France."


def _png(tmp_path):
    path = tmp_path / "picture.png"
    Image.new("RGB", (300, 200), (10, 200, 30)).save(path)
    return path


def _count_text_updates(page: Page) -> None:
    """Counts, in the page, how often an assistant reply's text changed."""
    page.evaluate(
        """() => {
        window.textUpdates = 0;
        new MutationObserver((records) => {
          for (const r of records) {
            const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
            if (el && el.closest('.message.assistant .text')) window.textUpdates++;
          }
        }).observe(document.getElementById('transcript'),
                   {subtree: true, childList: true, characterData: true});
    }"""
    )


def _chat_status(hub, key: str) -> int:
    return httpx.post(
        hub.server.base_url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": DEMO_MODEL,
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 1,
        },
        timeout=60,
    ).status_code


def _send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def test_a_streamed_reply_arrives_piece_by_piece_with_its_usage(page, hub, tmp_path):
    sign_in(page, hub.tenant_key)
    page.select_option("#model", DEMO_MODEL)
    page.fill("#max-tokens", "24")
    # Greedy, this question's answer is several tokens ("Paris, Lyon, and Bordeaux.").
    page.fill("#temperature", "0")
    _count_text_updates(page)
    _send(page, CITIES)
    expect(page.locator(".message.user")).to_have_text(CITIES)
    meta = page.locator(".message.assistant .meta.usage")
    expect(meta).to_contain_text("completion", timeout=60_000)
    reply = page.locator(".message.assistant .text").inner_text()
    assert "Paris" in reply, reply
    assert page.evaluate("window.textUpdates") >= 2, "the reply arrived in one piece"
    completion = int(meta.inner_text().split("completion ")[1].split(" ")[0])
    assert 1 <= completion <= 24
    expect(meta.locator(".cost")).to_contain_text("cost 0.000000")
    page.screenshot(path=tmp_path / "playground.png")


def test_an_uploaded_image_shows_the_exact_prompt_token_count(page, hub, tmp_path):
    sign_in(page, hub.tenant_key)
    page.select_option("#model", MISTRAL)
    page.fill("#prompt", "Describe this picture.")
    picture = _png(tmp_path)
    page.set_input_files("#image-input", picture)
    expect(page.locator(".attachments img")).to_have_count(1)
    count = page.locator("#token-count")
    expect(count).to_contain_text("image)", timeout=30_000)
    uri = "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()
    expected = httpx.post(
        hub.server.base_url + "/tokenize",
        headers={"Authorization": f"Bearer {hub.tenant_key}"},
        json={
            "model": MISTRAL,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe this picture."},
                        {"type": "image_url", "image_url": {"url": uri}},
                    ],
                }
            ],
        },
        timeout=60,
    ).json()
    assert expected["image_tokens"] > 0
    assert count.get_attribute("data-count") == str(expected["count"])
    assert count.inner_text().startswith(f"{expected['count']:,} prompt tokens")
    page.screenshot(path=tmp_path / "image-count.png")


def test_a_pasted_image_is_counted_too(page, hub):
    sign_in(page, hub.tenant_key)
    page.select_option("#model", MISTRAL)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 0, 0)).save(buf, format="PNG")
    page.evaluate(
        """(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], 'pasted.png', {type: 'image/png'}));
        document.getElementById('prompt').dispatchEvent(
          new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true}));
    }""",
        base64.b64encode(buf.getvalue()).decode(),
    )
    expect(page.locator(".attachments img")).to_have_count(1)
    expect(page.locator("#token-count")).to_contain_text("image)", timeout=30_000)


def test_a_tool_call_is_shown_as_a_tool_call(page, hub, tmp_path):
    sign_in(page, hub.tenant_key)
    page.select_option("#model", MISTRAL)
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "120")
    page.click("#tools-editor summary")
    page.fill("#tools", json.dumps([BOUNDED_WEATHER]))
    page.select_option("#tool-choice", "required")
    _send(page, "Weather in Paris?")
    meta = page.locator(".message.assistant .meta")
    expect(meta).to_contain_text("finish tool_calls", timeout=60_000)
    call = page.locator(".message.assistant .tool-call").first
    expect(call).to_contain_text("get_weather")
    expect(call.locator(".badge")).to_have_text("tool call")
    json.loads(call.locator("pre").inner_text())  # the arguments, pretty-printed JSON
    calls = page.locator(".message.assistant .tool-call").count()
    assert page.locator(".tool-results input").count() == calls >= 1
    page.screenshot(path=tmp_path / "tool-call.png")


def test_a_key_created_in_the_console_works_in_the_playground(page, hub, tmp_path):
    sign_in(page, hub.admin_token)
    # An admin token does not chat: the playground asks for a tenant's key.
    _send(page, QUESTION)
    expect(page.locator(".message.assistant .error")).to_contain_text("paste an API key")
    page.click("a[data-page=contracts]")
    page.click("#create-contract summary")
    page.fill("#contract-name", "browser-team")
    page.fill("#create-contract input[name=rpm]", "600")
    page.fill(
        "#create-contract textarea[name=prices]",
        json.dumps({DEMO_MODEL: {"input_per_million": 1000, "output_per_million": 2000}}),
    )
    page.click("#create-contract button[type=submit]")
    contract = page.locator("article[data-contract=browser-team]")
    expect(contract).to_contain_text("Requests/min 600")
    contract.locator("input[name=key-name]").fill("playground")
    contract.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text()
    assert key.startswith("mh-")
    expect(contract.locator("tbody tr")).to_have_count(1)
    page.click("#copy-key")
    assert page.evaluate("navigator.clipboard.readText()") == key
    page.screenshot(path=tmp_path / "new-key.png", full_page=True)

    page.click("#use-key")
    expect(page.locator("#playground-key")).to_have_value(key)
    page.select_option("#model", DEMO_MODEL)
    page.fill("#max-tokens", "8")
    _send(page, QUESTION)
    cost = page.locator(".message.assistant .meta .cost")
    expect(cost).to_contain_text("cost", timeout=60_000)
    assert float(cost.get_attribute("data-cost")) > 0  # priced at 1000/2000 per million
    usage = httpx.get(
        hub.server.base_url + "/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ).json()
    assert usage[0]["requests"] == 1
    assert abs(usage[0]["cost"] - float(cost.get_attribute("data-cost"))) < 1e-9
    page.screenshot(path=tmp_path / "used-key.png")


def test_the_usage_chart_changes_after_a_request(page, hub, tmp_path):
    sign_in(page, hub.tenant_key)
    page.click("a[data-page=usage]")
    charts = page.locator("#usage-charts")
    expect(charts.locator("canvas")).to_have_count(3)
    before = int(charts.get_attribute("data-requests"))
    tokens_chart = charts.locator("[data-metric=tokens] canvas")
    pixels_before = tokens_chart.screenshot()
    assert _chat_status(hub, hub.tenant_key) == 200
    page.click("#usage-refresh")
    expect(charts).to_have_attribute("data-requests", str(before + 1))
    assert tokens_chart.screenshot() != pixels_before
    expect(page.locator("#usage-table")).to_contain_text(DEMO_MODEL)
    with page.expect_download() as download:
        page.click("#usage-csv")
    rows = list(csv.DictReader(download.value.path().read_text().splitlines()))
    assert {row["model"] for row in rows} >= {DEMO_MODEL}
    assert sum(int(row["requests"]) for row in rows) == before + 1
    page.screenshot(path=tmp_path / "usage.png", full_page=True)


def test_a_deprecated_model_shows_its_badges(page, hub, tmp_path):
    sign_in(page, hub.tenant_key)
    page.click("a[data-page=models]")
    demo = page.locator(f'article[data-model="{DEMO_MODEL}"] .lifecycle')
    expect(demo).to_contain_text("deprecated")
    expect(demo).to_contain_text(f"sunset {SUNSET.isoformat()}")
    expect(demo).to_contain_text(f"successor {MISTRAL}")
    mistral = page.locator(f'article[data-model="{MISTRAL}"] .lifecycle')
    expect(mistral).to_contain_text("active")
    expect(mistral).not_to_contain_text("deprecated")
    page.screenshot(path=tmp_path / "models.png", full_page=True)
    page.click("a[data-page=playground]")
    expect(page.locator(f'#model option[value="{DEMO_MODEL}"]')).to_contain_text("(deprecated)")


def test_suspend_resume_and_revoke_from_the_console(page, hub, tmp_path):
    sign_in(page, hub.admin_token)
    page.click("a[data-page=contracts]")
    page.click("#create-contract summary")
    page.fill("#contract-name", "short-lived")
    page.click("#create-contract button[type=submit]")
    contract = page.locator("article[data-contract=short-lived]")
    contract.locator("input[name=key-name]").fill("temporary")
    contract.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text()

    contract.get_by_role("button", name="Edit limits").click()
    contract.locator("input[name=tpm]").fill("5000")
    contract.get_by_role("button", name="Save").click()
    expect(contract.locator(".limits")).to_have_text("Tokens/min 5000")

    contract.get_by_role("button", name="Suspend").click()
    expect(contract.locator("header .badge")).to_have_text("suspended")
    assert _chat_status(hub, key) == 403
    contract.get_by_role("button", name="Resume").click()
    expect(contract.locator("header .badge")).to_have_text("active")
    assert _chat_status(hub, key) == 200

    page.once("dialog", lambda dialog: dialog.accept())
    contract.get_by_role("button", name="Revoke").click()
    expect(contract.locator("tbody .badge")).to_contain_text("revoked")
    assert _chat_status(hub, key) == 401
    page.screenshot(path=tmp_path / "contracts.png", full_page=True)


def test_status_and_backends_are_live_for_an_admin(page, hub, tmp_path):
    sign_in(page, hub.admin_token)
    page.click("a[data-page=status]")
    row = page.locator("#status-models tr", has_text=DEMO_MODEL)
    expect(row).to_be_visible()
    before = int(page.locator("#status-requests .value").inner_text().replace(",", ""))
    assert _chat_status(hub, hub.tenant_key) == 200
    # The page polls every 2 s: the new request shows up without a reload.
    expect(page.locator("#status-requests .value")).not_to_have_text(str(before), timeout=10_000)
    expect(row).to_contain_text("ms")  # TTFT and TPOT medians exist once a request ran
    page.screenshot(path=tmp_path / "status.png", full_page=True)

    page.click("a[data-page=models]")
    # An admin token reads the catalog too, without any tenant key.
    expect(page.locator(f'article[data-model="{DEMO_MODEL}"] .lifecycle')).to_contain_text(
        "deprecated"
    )
    backends = page.locator("#backends tr", has_text=DEMO_MODEL)
    expect(backends).to_contain_text("ready")
    llama = page.locator("#backends tr", has_text="meta-llama/Llama-3.3-70B-Instruct")
    expect(llama).to_contain_text("not ready")
