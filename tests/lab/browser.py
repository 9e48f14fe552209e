"""A real browser inside a lab namespace: headless Debian chromium driven by Selenium, steered from the test.

The browser must reach the manager the way an operator's would, from the server namespace (192.168.2.10), so
chromium, chromedriver and Selenium's client all run there: `ip netns exec <prefix>server python -m
tests.lab.browser` starts this module's agent, which reads one JSON command a line on stdin and answers one JSON
line on stdout. `Browser` is the test's side of that pipe. Nothing is fetched from outside: the chromium and
chromedriver of the Debian packages (the Makefile's APT_PACKAGES) are named explicitly, so Selenium Manager never
runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--ignore-certificate-errors", "--disable-dev-shm-usage", "--window-size=1500,1000",
         )


def resolver_rules(reach: list[str]) -> str:
    """Every host name fails at once, without a DNS query, except the addresses the test reaches: chromium's own
    look-ups (update and search hosts) otherwise wait on a resolver the namespace cannot reach (13 s a page)."""
    return "--host-resolver-rules=MAP * ~NOTFOUND" + "".join(f", EXCLUDE {host}" for host in reach)


class BrowserError(Exception):
    """The agent could not do what it was asked; the message is the agent's."""


def missing() -> str | None:
    """Why the browser cannot run here (for a skip), or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install {package}; make apt-deps installs it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


class Browser:
    """The test's handle on the agent in a namespace. Every method is one round trip."""

    def __init__(self, netns: str, log_path: Path, reach: list[str]) -> None:
        """A browser in `netns` that can reach the addresses in `reach` (and no host name)."""
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.lab.browser", *reach], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self.call("hello")

    def call(self, op: str, **args: Any) -> Any:
        if self.proc.poll() is not None:
            raise BrowserError(f"the browser agent exited ({self.proc.returncode})")
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise BrowserError(f"the browser agent exited during {op} (its log: {self._log.name})")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise BrowserError(f"{op} {args}: {reply.get('error')}")
        return reply.get("result")

    # the commands
    def get(self, url: str) -> None:
        self.call("get", url=url)

    def url(self) -> str:
        return self.call("url")

    def text(self, css: str = "body") -> str:
        return self.call("text", css=css)

    def texts(self, css: str) -> list[str]:
        return self.call("texts", css=css)

    def click(self, css: str) -> None:
        """Click something that stays on the page (a checkbox)."""
        self.call("click", css=css)

    def follow(self, css: str) -> None:
        """Click a link or a submit button, and return once the next page has replaced this one."""
        self.call("follow", css=css)

    def type(self, css: str, value: str) -> None:
        self.call("type", css=css, value=value)

    def js(self, script: str) -> Any:
        return self.call("js", script=script)

    def cookies(self) -> list[dict[str, Any]]:
        return self.call("cookies")

    def wait_text(self, css: str, needle: str, timeout: float = 15.0) -> str:
        return self.call("wait_text", css=css, needle=needle, timeout=timeout)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.call("screenshot", path=str(path))

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrowserError):  # it may have ended already
                self.call("quit")
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


# -- the agent (runs in the namespace) --------------------------------------------------------------------------


def _driver(profile: str, reach: list[str]) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(resolver_rules(reach))
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


def _serve(reach: list[str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    profile = tempfile.mkdtemp(prefix="natt-chromium-")  # a fresh profile: no cookies, no cache
    driver = _driver(profile, reach)

    def wait_text(css: str, needle: str, timeout: float) -> str:
        def found(d: Any) -> str | bool:
            els = d.find_elements(By.CSS_SELECTOR, css)
            text = " ".join(e.text for e in els)
            return text if needle in text else False

        return WebDriverWait(driver, timeout, 0.2).until(found)

    def follow(css: str) -> None:
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
        from selenium.webdriver.support import expected_conditions

        deadline = time.monotonic() + 10.0
        while True:
            old = driver.find_element(By.TAG_NAME, "html")
            try:
                driver.find_element(By.CSS_SELECTOR, css).click()
                break
            except WebDriverException as e:
                # The page reloaded itself between finding and clicking (manager.js reloads a page whose sessions
                # changed): the element is found again on the page that replaced it. Anything else is raised.
                replaced = isinstance(e, StaleElementReferenceException) or "does not belong to the document" in str(e)
                if not replaced or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        WebDriverWait(driver, 20, 0.1).until(expected_conditions.staleness_of(old))
        WebDriverWait(driver, 20, 0.1).until(lambda d: d.execute_script("return document.readyState") == "complete")

    def screenshot(path: str) -> None:
        driver.execute_script("window.scrollTo(0, 0)")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1600, max(700, min(int(height) + 140, 4000)))
        time.sleep(0.3)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(path)
        driver.set_window_size(1500, 1000)

    ops = {
        "hello": lambda: "ready",
        "get": lambda url: driver.get(url),
        "url": lambda: driver.current_url,
        "text": lambda css: driver.find_element(By.CSS_SELECTOR, css).text,
        "texts": lambda css: [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)],
        "click": lambda css: driver.find_element(By.CSS_SELECTOR, css).click(),
        "follow": follow,
        "type": lambda css, value: _type(driver.find_element(By.CSS_SELECTOR, css), value),
        "js": lambda script: driver.execute_script(script),
        "cookies": lambda: driver.get_cookies(),
        "wait_text": wait_text,
        "screenshot": screenshot,
    }
    try:
        for line in sys.stdin:
            req = json.loads(line)
            op = req.pop("op")
            if op == "quit":
                print(json.dumps({"ok": True}), flush=True)
                break
            try:
                result = ops[op](**req)
                print(json.dumps({"ok": True, "result": result}, default=str), flush=True)
            except Exception as e:  # the test gets the error and decides
                print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _type(element: Any, value: str) -> None:
    element.clear()
    element.send_keys(value)


if __name__ == "__main__":
    _serve(sys.argv[1:])
