#!/usr/bin/env python3
"""The public MACP UI console, unchanged, against a served control plane: a manual check.

Each page of the console is opened in Debian's chromium (driven by PyPI `playwright`, never a
browser download) and every request its pages make to the control plane through the console's
proxy is recorded; then the flows that change something are clicked through: compile, validate
and submit a launch, create a webhook with the form's defaults, rebuild a run's projection,
download its export, clone it. Prints one line per page or flow with the requests that failed;
exits 1 if any request to the control plane failed.

Setup (once; nothing of the console is kept in this repository):

    pip install playwright                     # the Python package only
    apt-get install chromium                   # /usr/bin/chromium
    git clone https://github.com/multiagentcoordinationprotocol/ui-console && cd ui-console
    npm ci
    printf 'NEXT_PUBLIC_MACP_UI_DEMO_MODE=false\\nMACP_PLAYGROUND_BASE_URL=http://127.0.0.1:3001\\n'\
'MACP_CONTROL_PLANE_BASE_URL=http://127.0.0.1:3001\\n' > .env.local
    npx next dev -p 3000                       # `next build` needs fonts from outside

Then, with `macp-control-plane serve` on :3001 holding at least two runs:

    tools/console-smoke.py [--console http://localhost:3000] [--service http://127.0.0.1:3001]

Use `localhost` for the console: Next's dev server refuses its scripts to other origins.
"""

import argparse
import asyncio
import json
import sys
import urllib.request

from playwright.async_api import async_playwright

CHROMIUM = "/usr/bin/chromium"
# The console's own proxy to its two backends, both this service here.
PROXY = "/api/proxy/"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--console", default="http://localhost:3000")
    parser.add_argument("--service", default="http://127.0.0.1:3001")
    return parser.parse_args()


class Recorder:
    """Requests a page makes to the control plane through the console's proxy."""

    def __init__(self, console):
        self.console = console
        self.calls = []

    def attach(self, page):
        page.on("response", self.on_response)

    def on_response(self, response):
        if PROXY in response.url:
            path = response.url.replace(self.console, "")
            self.calls.append((response.status, response.request.method, path))

    def take(self):
        calls, self.calls = self.calls, []
        return calls


async def open_page(page, url):
    await page.goto(url, wait_until="networkidle", timeout=120_000)
    # The pages fetch after hydration; networkidle can come before their first request.
    await page.wait_for_load_state("networkidle")


async def click(page, name):
    button = page.get_by_role("button", name=name, exact=True)
    if await button.count() == 0:
        raise RuntimeError(f"no button named {name!r}")
    await button.first.click()
    await page.wait_for_load_state("networkidle")


async def launch(page, console):
    await open_page(page, console + "/runs/new")
    await click(page, "Compile launch")
    for name in ("Validate", "Validate request"):
        if await page.get_by_role("button", name=name, exact=True).count():
            await click(page, name)
            break
    await click(page, "Submit run")
    await page.wait_for_url("**/runs/live/**", timeout=60_000)


async def create_webhook(page, console):
    await open_page(page, console + "/settings")
    inputs = page.locator("input")
    for index in range(await inputs.count()):
        field = inputs.nth(index)
        placeholder = (await field.get_attribute("placeholder") or "").lower()
        if "http" in placeholder:
            await field.fill("http://127.0.0.1:9/console-smoke")
        elif "secret" in placeholder:
            await field.fill("console-smoke-secret")
    await click(page, "Create webhook")


async def run_actions(page, console, run_id):
    await open_page(page, f"{console}/runs/{run_id}")
    await click(page, "Rebuild projection")
    await click(page, "Export bundle")
    async with page.expect_download(timeout=30_000) as download:
        await click(page, "Download")
    if not await (await download.value).path():
        raise RuntimeError("the export was not downloaded")
    await click(page, "Clone run")
    await click(page, "Clone with overrides")
    await page.wait_for_url("**/runs/live/**", timeout=60_000)


async def main():
    args = parse_args()
    with urllib.request.urlopen(args.service + "/runs?limit=2") as answer:
        runs = [run["id"] for run in json.load(answer)["data"]]
    if len(runs) < 2:
        sys.exit("the service needs at least two runs (run the README's quick tour first)")
    first, second = runs
    pages = [
        "/", "/runs", f"/runs/{first}", f"/runs/live/{first}",
        f"/runs/{first}/compare/{second}", "/runs/new", "/scenarios", "/agents", "/modes",
        "/policies", "/observability", "/logs", "/settings", "/traces",
    ]
    flows = [
        ("launch: compile, validate, submit", lambda page: launch(page, args.console)),
        ("settings: create a webhook with the form's defaults",
         lambda page: create_webhook(page, args.console)),
        ("run: rebuild, export, clone", lambda page: run_actions(page, args.console, first)),
    ]
    failed = 0
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = await browser.new_context(accept_downloads=True)
        recorder = Recorder(args.console)
        steps = [(path, lambda page, path=path: open_page(page, args.console + path))
                 for path in pages] + flows
        for name, step in steps:
            page = await context.new_page()
            recorder.attach(page)
            error = None
            try:
                await step(page)
            except Exception as exception:  # reported, then the next step runs
                error = str(exception).splitlines()[0]
            calls = recorder.take()
            bad = [call for call in calls if call[0] >= 400]
            failed += len(bad) + (error is not None)
            verdict = "ok" if not bad and error is None else "FAILED"
            print(f"{verdict:6} {name}: {len(calls)} calls to the control plane")
            for status, method, path in bad:
                print(f"         {status} {method} {path}")
            if error:
                print(f"         {error}")
            await page.close()
        await browser.close()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    asyncio.run(main())
