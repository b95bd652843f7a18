"""Measure the demo pages of trained runs: file size, agreement with the Python model, chars/s in Chromium.

    python benchmarks/demo_page.py --run-dir runs/jaychou-lstm-... --run-dir runs/shakespeare-cpu-10m-... \
        --screenshot docs/demo.png

For each run: `charlm export --html` (float16), the page's size; the page's JavaScript in node against
`charlm generate --temperature 0` (greedy text over --check-length characters, largest logit difference
over the prefix); then the page in headless Chromium: type the card's prefix, Generate --length characters
at temperature 0.8 (seed 1), --repeat times, and read the chars/s the page reports. --screenshot saves the
first run's page after a generation; with --items N, after N items in the page's items mode (a run trained on
documents), as docs/demo-items.png was made. Needs chromium, node and playwright (as the tests do).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from browser import chromium_executable, node_executable, open_page  # noqa: E402

from charlm.export.demo import export_html  # noqa: E402
from charlm.generation.sampling import generate  # noqa: E402
from charlm.store.checkpoint import load_model  # noqa: E402
from charlm.store.run_dir import RunDir  # noqa: E402


def node_check(page: Path, run: Path, prefix: str, length: int, folder: Path) -> dict:
    model, vocab, _ = load_model(run / "best.pt")
    requests = folder / "requests.json"
    requests.write_text(json.dumps([{"page": str(page), "prefix": prefix, "length": length}]), encoding="utf-8")
    done = subprocess.run(
        [node_executable(), str(REPO / "tests" / "demo_node.js"), str(requests)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=True,
    )
    result = json.loads(done.stdout)[0]
    with torch.inference_mode():
        logits, _ = model(torch.tensor([vocab.encode(prefix)]), None)
    logits = logits[:, 0].double()
    difference = (torch.tensor(result["logits"], dtype=torch.float64)[: len(prefix)] - logits).abs().max()
    greedy = generate(model, vocab, prefix, length)[0][len(prefix) :]
    same = next((i for i, (a, b) in enumerate(zip(greedy, result["greedy"], strict=True)) if a != b), None)
    return {
        "greedy_identical_chars": length if same is None else same,
        "max_logit_diff": float(difference),
        "max_abs_logit": float(logits.abs().max()),
        "node_greedy_chars_per_s": length / result["seconds"],
    }


def generate_in_page(page, length: int) -> float:
    """Generate at temperature 0.8, seed 1, from the prefix in the box; the page's chars/s."""
    page.fill("#length", str(length))
    page.fill("#temperature", "0.8")
    page.fill("#seed", "1")
    page.evaluate("document.getElementById('status').dataset.state = ''")
    page.click("#generate")
    page.wait_for_selector("#status[data-state=done]", timeout=600_000)
    return float(page.get_attribute("#status", "data-chars-per-second"))


def chromium_rate(browser, page_file: Path, length: int, repeat: int, screenshot: Path | None, items: int = 0) -> dict:
    opened = open_page(browser, page_file)
    page = opened.page
    rates = [generate_in_page(page, length) for _ in range(repeat)]
    if screenshot is not None:
        if items:
            page.select_option("#mode", "items")
            page.fill("#count", str(items))
        generate_in_page(page, 150)  # a sample (or items) that fits the window
        page.screenshot(path=str(screenshot))
    opened.check_offline()
    opened.close()
    return {"chromium_chars_per_s": statistics.median(rates), "chromium_runs": rates}


def measure(
    browser,
    runs: list[Path],
    length: int,
    check_length: int,
    repeat: int,
    screenshot: Path | None,
    folder: Path,
    items: int = 0,
) -> list[dict]:
    results = []
    for number, run in enumerate(runs):
        page_file = folder / f"{run.name}.html"
        page = export_html(RunDir(run), "best", page_file)
        spec = page.html.split('type="application/json">')[1].split("</script>")[0]
        prefix = json.loads(spec)["card"]["prefix"] or "\n"
        result = {
            "run": run.name,
            "page_bytes": page.size,
            "weights": page.weights,
            "weight_bytes": page.weight_bytes,
            "prefix": prefix,
        }
        result.update(node_check(page_file, run, prefix, check_length, folder))
        shot = screenshot if number == 0 else None
        result.update(chromium_rate(browser, page_file, length, repeat, shot, items))
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, action="append", required=True)
    parser.add_argument("--length", type=int, default=1000, help="characters per timed generation in Chromium")
    parser.add_argument("--check-length", type=int, default=200, help="greedy characters compared with Python")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--items", type=int, default=0, help="the screenshot shows this many items (items mode)")
    args = parser.parse_args()
    if chromium_executable() is None or node_executable() is None:
        sys.exit("needs chromium and node: apt-get install chromium nodejs")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=["--no-sandbox"])
        for result in measure(
            browser,
            args.run_dir,
            args.length,
            args.check_length,
            args.repeat,
            args.screenshot,
            Path(folder),
            args.items,
        ):
            print(json.dumps(result, ensure_ascii=False))
        browser.close()


if __name__ == "__main__":
    main()
