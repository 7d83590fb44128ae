"""Screenshot of an MLflow experiment's runs table with its nested runs expanded (headless Chromium, driven
over the DevTools protocol), for docs/.

    python benchmarks/mlflow_ui_screenshot.py http://127.0.0.1:5000 EXPERIMENT_ID docs/mlflow-nested-runs.png

docs/mlflow-nested-runs.png is tests/integration/test_mlflow_tracking.py's experiment (2 configurations x 2 seeds of
the tiny random BERT on SST-2 rows), logged again from that test's runs volume (`log_experiment`) into a new MLflow
experiment of a server on that test's store.

Needs `chromium` (Debian: apt-get install -y chromium) and websocket-client.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

# Close the assistant panel; expand every collapsed parent row (its button shows a plus; children load lazily).
_EXPAND = """
(() => {
  let clicked = 0;
  for (const b of document.querySelectorAll('button[aria-label="Close"]')) { b.click(); clicked++; }
  for (const b of document.querySelectorAll('button[data-component-id*="runnamecellrenderer"]')) {
    if (b.innerHTML.includes('M7.25 7.25V4.5')) { b.click(); clicked++; }
  }
  return clicked;
})()
"""
# Open the column chooser and tick the interval columns and the best / not_worse tags.
_OPEN_COLUMNS = """
(() => {
  const b = [...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Columns');
  b.click();
  return !!b;
})()
"""
_TICK_COLUMNS = """
(() => {
  const wanted = new RegExp('^(accuracy_mean|accuracy_ci_low|accuracy_ci_high|validation_accuracy|'
    + 'validation_accuracy_ci_low|validation_accuracy_ci_high|best|not_worse)$');
  const ticked = [];
  for (const node of document.querySelectorAll('.du-bois-light-tree-treenode')) {
    const text = node.textContent.trim();
    const box = node.querySelector('.du-bois-light-tree-checkbox');
    if (wanted.test(text) && box && !box.className.includes('checked')) { box.click(); ticked.push(text); }
  }
  return ticked.join(',');
})()
"""


class _Page:
    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=60)
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                return message.get("result", {})


def screenshot(server: str, experiment_id: str, out: Path, *, width: int = 2200, height: int = 900) -> None:
    port = 9333
    with tempfile.TemporaryDirectory() as profile:
        chromium = subprocess.Popen(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--remote-debugging-port={port}",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as reply:
                        targets = [t for t in json.load(reply) if t["type"] == "page"]
                    break
                except OSError:
                    time.sleep(0.2)
            page = _Page(targets[0]["webSocketDebuggerUrl"])
            page.call("Page.enable")
            page.call(
                "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
            )
            page.call("Page.navigate", url=f"{server}/#/experiments/{experiment_id}/runs")
            time.sleep(8)
            for _ in range(4):
                page.call("Runtime.evaluate", expression=_EXPAND, returnByValue=True)
                time.sleep(2)
            page.call("Runtime.evaluate", expression=_OPEN_COLUMNS, returnByValue=True)
            time.sleep(1)
            ticked = page.call("Runtime.evaluate", expression=_TICK_COLUMNS, returnByValue=True)
            print("columns:", ticked.get("result", {}).get("value"))
            page.call("Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape", windowsVirtualKeyCode=27)
            time.sleep(2)
            shot = page.call("Page.captureScreenshot", format="png")
            out.write_bytes(base64.b64decode(shot["data"]))
        finally:
            chromium.terminate()
            chromium.wait(timeout=20)


if __name__ == "__main__":
    screenshot(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
