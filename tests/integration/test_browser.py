"""The browser demo and the caption viewer in a real headless Chromium against the real stack.

Debian's `chromium` (scripts/test.sh installs it) is driven by Playwright's Python package through
``executable_path``; no browser is downloaded. Its fake microphone plays a WAV file: the committed
three sentences followed by silence (Chrome loops the file, so the silence keeps the sentences from
coming round again before a test is done; tests assert on the first three finals).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import async_playwright

from cli.dev import Stack
from common import bus, subjects
from common.bus_settings import BusSettings
from common.messages import Revision, Transcript, encode
from common.nats_server import NatsServer
from common.settings import Settings, replace
from tests.conftest import DATA, ONE_SENTENCE, THREE_UTTERANCES, pcm_of, wav_bytes
from tests.helpers import connect, edge_server, running_stack, wer, ws_url

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SILENCE_S = 45  # after the speech, before Chrome's fake microphone loops the file
CAPTION_TIMEOUT_MS = 120_000  # three sentences spoken in real time, then recognised on shared CPUs

@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "three_then_silence.wav"
    path.write_bytes(wav_bytes(pcm_of("three_utterances.wav") + bytes(16000 * 2 * SILENCE_S)))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), 0) as stack:
        yield stack


@pytest.fixture
async def browser(speech_wav: Path) -> AsyncIterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.fail("chromium is not installed: run bash scripts/test.sh (it installs Debian's chromium)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-audio-capture={speech_wav}", "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Any, url: str) -> Any:
    # bypass_csp: the test's own probes (wait_for_function) are scripts the page's CSP would refuse.
    context = await browser.new_context(viewport={"width": 1000, "height": 720}, bypass_csp=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.errors = errors
    await page.goto(url)
    return page


async def finals_on(page: Any, count: int) -> list[tuple[int, str]]:
    """Waits until the page shows ``count`` finals; returns the first ``count`` as (seq, text)."""
    await page.wait_for_function(f"document.querySelectorAll('#finals li').length >= {count}",
                                 timeout=CAPTION_TIMEOUT_MS)
    items = await page.eval_on_selector_all("#finals li", "els => els.map(e => [Number(e.dataset.seq), e.textContent])")
    return [(int(seq), str(text)) for seq, text in items[:count]]


def assert_three_sentences(finals: list[tuple[int, str]]) -> None:
    assert [seq for seq, _ in finals] == [1, 2, 3], finals
    for (_, text), reference in zip(finals, THREE_UTTERANCES, strict=True):
        assert wer(reference, text) <= 0.25, (reference, text)


async def state_of(page: Any) -> str:
    return str(await page.get_attribute("#status", "data-state"))


async def test_microphone_captions_appear_on_the_page(stack: Stack, browser: Any, tmp_path: Path) -> None:
    page = await new_page(browser, f"http://127.0.0.1:{stack.port}/")
    assert await page.get_attribute("#finals", "aria-live") == "polite"
    await page.click("#mic")
    await page.wait_for_function("document.querySelector('#status').dataset.state === 'live'", timeout=30_000)
    await page.wait_for_function("document.querySelector('#mic').getAttribute('aria-pressed') === 'true'",
                                 timeout=30_000)
    # The level meter moves while the fake microphone speaks.
    await page.wait_for_function("document.querySelector('#level').value > 0.05", timeout=30_000)
    finals = await finals_on(page, 3)
    assert_three_sentences(finals)
    shot = tmp_path / "demo.png"
    await page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    # Downloads carry the same finals.
    async with page.expect_download() as download_info:
        await page.click("#dl-srt")
    srt = await asyncio.to_thread(Path(await (await download_info.value).path()).read_text)
    assert srt.startswith("1\n00:00:") and " --> " in srt and finals[0][1] in srt
    # Stop: the page ends the session; the edge flushes and closes normally.
    await page.click("#mic")
    await page.wait_for_function("document.querySelector('#status').dataset.state === 'ended'", timeout=60_000)
    assert page.errors == []


async def test_a_local_file_is_streamed_and_captioned(stack: Stack, browser: Any, tmp_path: Path) -> None:
    """The file picker: a 44.1 kHz stereo WAV is decoded and resampled by the browser, sent at the
    pace it is spoken, and the session ends by itself when the file is done."""
    page = await new_page(browser, f"http://127.0.0.1:{stack.port}/")
    await page.set_input_files("#file", str(DATA / "one_sentence_44k_stereo.wav"))
    await page.wait_for_function("document.querySelector('#status').dataset.state === 'ended'", timeout=90_000)
    finals = await finals_on(page, 1)
    assert [seq for seq, _ in finals] == [1] and wer(ONE_SENTENCE, finals[0][1]) <= 0.25, finals
    async with page.expect_download() as download_info:
        await page.click("#dl-vtt")
    vtt = await asyncio.to_thread(Path(await (await download_info.value).path()).read_text)
    assert vtt.startswith("WEBVTT\n\n00:00:") and finals[0][1] in vtt
    # The same file again is a new session: the view starts over with its seq 1.
    first_link = await page.get_attribute("#share-link", "href")
    await page.set_input_files("#file", str(DATA / "one_sentence.wav"))
    await page.wait_for_function(f"document.querySelector('#share-link').href !== {first_link!r}", timeout=30_000)
    await page.wait_for_function("document.querySelector('#status').dataset.state === 'ended'", timeout=90_000)
    again = await finals_on(page, 1)
    assert await page.locator("#finals li").count() == 1 and again[0][0] == 1
    assert wer(ONE_SENTENCE, again[0][1]) <= 0.25, again
    assert page.errors == []


class DropProxy:
    """A TCP proxy in front of the edge whose connections can all be cut at once (a network drop)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()
        self.pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.links |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    def cut(self) -> int:
        """Resets every open connection; returns how many."""
        links, self.links = self.links, set()
        for writer in links:
            writer.transport.abort()
        return len(links)

    async def stop(self) -> None:
        self.cut()
        for task in list(self.pipes):
            task.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_a_dropped_connection_resumes_without_losing_a_final(stack: Stack, browser: Any) -> None:
    proxy = DropProxy(stack.port)
    await proxy.start()
    try:
        page = await new_page(browser, f"http://127.0.0.1:{proxy.port}/")
        await page.click("#mic")
        first = await finals_on(page, 1)
        session_before = await page.evaluate("window.captionsDemo.client.session.id")
        # The network drops while the speaker goes on talking.
        assert proxy.cut() >= 2
        banner = page.locator("#banner")
        await banner.wait_for(state="visible", timeout=30_000)
        assert await page.text_content("#banner-text") == "Connection unstable. Reconnect?"
        assert await state_of(page) == "unstable"
        await page.click("#reconnect")
        await page.wait_for_function("document.querySelector('#status').dataset.state === 'live'", timeout=30_000)
        finals = await finals_on(page, 3)
        assert finals[0] == first[0]
        assert_three_sentences(finals)
        # The same session goes on (resumed, not restarted), and no final is shown twice.
        assert await page.evaluate("window.captionsDemo.client.session.id") == session_before
        seqs = await page.eval_on_selector_all("#finals li", "els => els.map(e => Number(e.dataset.seq))")
        assert seqs == list(range(1, len(seqs) + 1)), seqs
        await page.click("#mic")
        await page.wait_for_function("document.querySelector('#status').dataset.state === 'ended'", timeout=60_000)
        assert page.errors == [] or all("WebSocket" in e for e in page.errors), page.errors
    finally:
        await proxy.stop()


async def test_a_viewer_page_shows_the_same_finals(stack: Stack, browser: Any) -> None:
    page = await new_page(browser, f"http://127.0.0.1:{stack.port}/")
    assert await page.locator("#share").is_hidden()  # no link to share before a session starts
    # Keyboard only: focus the microphone button and press Space.
    await page.focus("#mic")
    await page.keyboard.press("Space")
    await page.locator("#share").wait_for(state="visible", timeout=30_000)
    link = str(await page.get_attribute("#share-link", "href"))
    assert "/viewer?session=" in link and "&token=" in link
    viewer = await new_page(browser, link)
    await viewer.wait_for_function("document.querySelector('#status').dataset.state === 'live'", timeout=30_000)
    speaker_finals = await finals_on(page, 3)
    viewer_finals = await finals_on(viewer, 3)
    assert_three_sentences(speaker_finals)
    assert viewer_finals == speaker_finals
    # Readability controls: larger captions and high contrast, by keyboard.
    before = await viewer.evaluate("getComputedStyle(document.querySelector('.captions')).fontSize")
    await viewer.focus("#larger")
    await viewer.keyboard.press("Enter")
    after = await viewer.evaluate("getComputedStyle(document.querySelector('.captions')).fontSize")
    assert float(after.removesuffix("px")) > float(before.removesuffix("px"))
    await viewer.focus("#contrast")
    await viewer.keyboard.press("Enter")
    assert await viewer.evaluate("document.body.classList.contains('high-contrast')")
    # The speaker stops; the viewer is told the session ended.
    await page.click("#mic")
    await viewer.wait_for_function("document.querySelector('#status').dataset.state === 'ended'", timeout=60_000)
    assert viewer.errors == [] and page.errors == []


async def test_at_capacity_the_page_says_captions_are_unavailable(
    nats_server: NatsServer, browser: Any
) -> None:
    settings = replace(Settings(), nats_url=nats_server.url, require_workers_ready=False, max_sessions_per_worker=1,
                       vad_http_port=0, asr_http_port=0)
    async with edge_server(settings) as edge, aiohttp.ClientSession() as http:
        holder = await connect(http, ws_url(edge))  # takes the only place
        page = await new_page(browser, str(edge.make_url("/")))
        await page.click("#mic")
        await page.locator("#banner").wait_for(state="visible", timeout=30_000)
        assert await page.text_content("#banner-text") == "Live captions temporarily unavailable"
        assert await state_of(page) == "capacity"
        assert await page.is_hidden("#reconnect")
        await holder.ws.close()


async def test_the_viewer_page_shows_a_revision_in_place_and_downloads_it(
    nats_server: NatsServer, browser: Any
) -> None:
    """The test stores the session's finals and a revision in RESULTS as the ASR worker would; the
    viewer page replaces the revised final's text where it stands, and its transcript download has
    the new text."""
    settings = replace(Settings(), nats_url=nats_server.url, require_workers_ready=False, vad_http_port=0,
                       asr_http_port=0)
    async with edge_server(settings) as edge, aiohttp.ClientSession() as http:
        speaker = await connect(http, ws_url(edge))
        started = speaker.messages[0]
        sid = started["session_id"]
        nc, js = await bus.connect_jetstream(BusSettings.from_settings(settings), "test-asr")
        try:
            for i, text in ((1, "the first final"), (2, "the second final")):
                final = Transcript(session_id=sid, utterance_id=f"u{i}", is_final=True, text=text,
                                   start_s=float(i), end_s=i + 0.5, final_index=i)
                await js.publish(subjects.result_final(sid), encode(final),
                                 headers={subjects.H_MSG_ID: subjects.final_result_id(sid, i)})
            link = f"/viewer?session={sid}&token={started['viewer_token']}"
            viewer = await new_page(browser, str(edge.make_url(link)))
            assert await finals_on(viewer, 2) == [(1, "the first final"), (2, "the second final")]
            revision = Revision(session_id=sid, utterance_id="u1", final_index=1, text="the first final, revised",
                                start_s=1.0, end_s=1.5)
            await js.publish(subjects.result_revision(sid), encode(revision),
                             headers={subjects.H_MSG_ID: subjects.revision_result_id(sid, 1)})
            await viewer.wait_for_function(
                "document.querySelector('#finals li[data-seq=\"1\"]').textContent === 'the first final, revised'",
                timeout=30_000)
            assert await finals_on(viewer, 2) == [(1, "the first final, revised"), (2, "the second final")]
            async with viewer.expect_download() as download_info:
                await viewer.click("#dl-txt")
            download = await download_info.value
            text = await asyncio.to_thread(Path(await download.path()).read_text)
            assert text == "the first final, revised\nthe second final\n"
            assert viewer.errors == []
        finally:
            await bus.close(nc)
            await speaker.ws.close()
