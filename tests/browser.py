"""Drive the Serve app's web page (deploy/static/index.html) in a real headless Chromium.

A helper for the Serve tests, not a test file. It uses Playwright's Python API against
the system's Chromium (Debian: `apt-get install -y chromium`), never a browser that
Playwright downloads itself.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import shutil

#: the reason text when a browser test skips for want of a browser
BROWSER_INSTALL = "apt-get install -y chromium"

#: where to look, in order, after $RAYGAN_CHROMIUM
CANDIDATES = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "/usr/bin/chromium",
    "/usr/lib/chromium/chromium",
    "/snap/bin/chromium",
)

#: as root (CI, containers) Chromium's sandbox cannot start; small /dev/shm crashes tabs
LAUNCH_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable: $RAYGAN_CHROMIUM, then PATH, then the usual places."""
    env = os.environ.get("RAYGAN_CHROMIUM")
    if env and os.path.isfile(env) and os.access(env, os.X_OK):
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def skip_reason() -> str | None:
    """Why a browser test cannot run here (None when it can): no Chromium, or no Playwright."""
    if find_chromium() is None:
        return f"no Chromium: {BROWSER_INSTALL}"
    if importlib.util.find_spec("playwright") is None:
        return "no Playwright: pip install playwright"
    return None


_READ_PAGE = """() => {
    const r = document.getElementById("restored"), d = document.getElementById("degraded");
    return {
        width: Number(r.dataset.width), height: Number(r.dataset.height),
        model: document.getElementById("model").textContent.trim(),
        degraded_width: d.naturalWidth, degraded_height: d.naturalHeight,
    };
}"""

#: the bytes of the two images the page shows (fetched back from their blob: URLs, base64)
#: and where the restored one is on the page (CSS px, from the page's top left)
_READ_IMAGES = """async () => {
    const b64 = async (img) => {
        const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
        let s = "";
        for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
        return btoa(s);
    };
    const r = document.getElementById("restored"), d = document.getElementById("degraded");
    const box = r.getBoundingClientRect();
    return {
        restored: await b64(r), degraded: await b64(d),
        box: [box.left + window.scrollX, box.top + window.scrollY, box.width, box.height],
    };
}"""


def restore_in_browser(base_url: str, token: str, task: str, photo: str, screenshot: str,
                       timeout_s: float = 60) -> dict:
    """Open base_url + "/" in headless Chromium, type the token, pick the task, upload `photo`,
    wait for body[data-state=done] (raise with the #status text on 'error' or timeout), save a
    full-page screenshot to `screenshot`, and return {"width": ..., "height": ..., "model": <#model text>,
    "degraded_width": ..., "degraded_height": ...} read from the page, with the files of the
    images it shows, "degraded_file" and "restored_file" (bytes), and "restored_box", the
    restored image's (left, top, width, height) on the page (device scale 1: screenshot px)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    exe = find_chromium()
    if exe is None:
        raise RuntimeError(f"no Chromium found: {BROWSER_INSTALL}")
    timeout_ms = timeout_s * 1000
    console: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=LAUNCH_ARGS, headless=True,
                                    timeout=timeout_ms)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
            page.set_default_timeout(timeout_ms)
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))

            def status() -> str:
                try:
                    text = page.locator("#status").text_content(timeout=2000) or ""
                except PlaywrightError:
                    text = "(no #status)"
                state = page.evaluate("document.body.dataset.state")
                tail = ("; console: " + " | ".join(console[-5:])) if console else ""
                return f"state={state!r}, status={text.strip()!r}{tail}"

            def fail(message: str) -> RuntimeError:
                try:  # the page as it failed, for the test's artifacts
                    page.screenshot(path=screenshot, full_page=True, timeout=10_000)
                except PlaywrightError:
                    pass
                return RuntimeError(f"{message}: {status()}")

            def wait(js: str, what: str, arg=None) -> None:
                try:
                    page.wait_for_function(js, arg=arg, timeout=timeout_ms)
                except PlaywrightError as e:
                    raise fail(f"timed out after {timeout_s:g}s waiting for {what}") from e
                if page.evaluate("document.body.dataset.state") == "error":
                    raise fail(f"the page reported an error while waiting for {what}")

            resp = page.goto(base_url.rstrip("/") + "/", wait_until="load")
            if resp is None or not resp.ok:
                raise RuntimeError(f"GET {base_url}/ answered {resp.status if resp else 'nothing'}")
            page.fill("#token", token)
            page.dispatch_event("#token", "change")
            wait("(task) => ['error', 'ready'].includes(document.body.dataset.state) || "
                 "[...document.querySelectorAll('#task option')].some((o) => o.value === task)",
                 "the model list", arg=task)
            offered = page.eval_on_selector_all("#task option", "(os) => os.map((o) => o.value)")
            if task not in offered:
                raise fail(f"the page offers no task {task!r} (it offers {offered})")
            page.select_option("#task", task)
            page.set_input_files("#photo", photo)
            wait("() => ['done', 'error'].includes(document.body.dataset.state)", "the restored image")
            page.screenshot(path=screenshot, full_page=True)
            info = page.evaluate(_READ_PAGE)
            images = page.evaluate(_READ_IMAGES)
        finally:
            browser.close()
    return {
        "width": info["width"],
        "height": info["height"],
        "model": info["model"],
        "degraded_width": info["degraded_width"],
        "degraded_height": info["degraded_height"],
        "degraded_file": base64.b64decode(images["degraded"]),
        "restored_file": base64.b64decode(images["restored"]),
        "restored_box": tuple(images["box"]),
    }

