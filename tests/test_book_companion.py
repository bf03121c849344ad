"""The book reads like a paper companion: every experiment page opens with a verdict box,
hides its set-up, shows no stderr, keeps its tables narrow and pastes its glued numbers.

The book is built from a temporary copy of ``book/`` whose ``experiments/`` points at the
smoke-executed notebooks in ``notebooks/`` (the structure of the current notebooks, whatever
state the published ``cpu`` pages are in). ``TTLIB_BOOK_TEST_ROOT`` builds another checkout's
book and notebooks the same way (to show that a checkout before these rules fails them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ttlib.experiments.presets import EXPERIMENTS  # every experiment page

ROOT = Path(os.environ.get("TTLIB_BOOK_TEST_ROOT", Path(__file__).resolve().parent.parent))

VERDICTS = ("reproduced", "partly", "not at this scale")
MAX_COLUMNS = 6  # a table of at most six columns fits the content column at 1280 px
BOX_TITLE = "The paper’s claim and this run"  # smart quotes are on in the book

pytestmark = pytest.mark.slow  # builds the whole book (minutes)


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory: pytest.TempPathFactory):
    """Build <tmp>/book, a copy of the book whose experiment pages are notebooks/*.ipynb."""
    tmp = tmp_path_factory.mktemp("companion")
    for name in ("_config.yml", "ttlib", "results", "notebooks", "benchmarks"):
        if (ROOT / name).exists():
            (tmp / name).symlink_to(ROOT / name)
    shutil.copytree(
        ROOT / "book", tmp / "book", symlinks=True, ignore=shutil.ignore_patterns("_build")
    )
    (tmp / "book" / "experiments").unlink()
    (tmp / "book" / "experiments").symlink_to(Path("..") / "notebooks")
    cmd = [
        sys.executable,
        "-c",
        "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
        "build",
        str(tmp / "book"),
        "-W",
        "--keep-going",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    # --keep-going writes every page even when a warning fails the build; the first test
    # reports the build's failure, the others what the pages show
    return result, tmp / "book" / "_build" / "html"


class _Tables(HTMLParser):
    """The number of cells in every row of every table on a page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._depth += 1
        elif tag == "tr" and self._depth:
            self.rows.append(0)
        elif tag in ("td", "th") and self._depth and self.rows:
            span = int(dict(attrs).get("colspan") or 1)
            self.rows[-1] += span

    def handle_endtag(self, tag):
        if tag == "table":
            self._depth -= 1


def assert_verdict_box(page: str, name: str) -> int:
    """The page (HTML) has the verdict box with a verdict word in it; where the box starts."""
    start = page.find(BOX_TITLE)
    assert start >= 0, f"{name}: no verdict box"
    box = page[start : page.find("</div>", start)]
    assert re.search("<strong>(" + "|".join(VERDICTS) + ")</strong>", box), name
    return start


def assert_provenance_footer(page: str, name: str) -> None:
    """The page (HTML) ends with its provenance: commit, machine and wall time."""
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert "Provenance of this page." in text, f"{name}: no provenance footer"
    assert re.search(r"at commit [0-9a-f]{8}", text), name
    assert "wall time" in text and "cores" in text, name


def _page(html: Path, name: str) -> str:
    return (html / "experiments" / f"{name}.html").read_text(encoding="utf-8")


def _glued(name: str) -> dict[str, str]:
    """The text/html values a notebook glued (key -> markup)."""
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    out = {}
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            key = o.get("metadata", {}).get("scrapbook", {}).get("name")
            data = o.get("data", {}).get("application/papermill.record/text/html")
            if key and data:
                out[key] = "".join(data) if isinstance(data, list) else data
    return out


def test_the_book_builds_without_warnings(smoke_book):
    result, html = smoke_book
    log = result.stdout + result.stderr
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert not warnings, "\n".join(warnings)
    assert result.returncode == 0, log[-4000:]
    assert (html / "index.html").is_file()


def test_no_page_shows_stderr(smoke_book):
    _, html = smoke_book
    for page in html.rglob("*.html"):
        assert 'class="output stderr' not in page.read_text(encoding="utf-8"), page.name


def test_setup_and_parameters_cells_are_not_on_the_pages(smoke_book):
    _, html = smoke_book
    for name in EXPERIMENTS:
        page = _page(html, name)
        assert "tag_parameters" not in page, f"{name}: the parameters cell is shown"
        text = re.sub(r"<[^>]+>", "", page)
        assert "runs.start(" not in text, f"{name}: the set-up cell is shown"
        assert "preset = " not in text, f"{name}: the parameters cell is shown"


def test_every_experiment_page_opens_with_a_computed_verdict(smoke_book):
    _, html = smoke_book
    for name in EXPERIMENTS:
        page = _page(html, name)
        start = assert_verdict_box(page, name)
        assert page.find('<section id="how-the-verdict-is-computed"') > start, name
        # the box comes before the page's first code cell
        first_cell = page.find('class="cell docutils container')
        first_cell = first_cell if first_cell >= 0 else page.find('class="cell tag_')
        assert first_cell < 0 or start < first_cell, f"{name}: verdict box after the code"


def test_verdicts_and_glued_numbers_are_pasted(smoke_book):
    _, html = smoke_book
    intro = (html / "intro.html").read_text(encoding="utf-8")
    assert "not computed" not in intro, "an experiment page lacks its verdict"
    for name in EXPERIMENTS:
        glued = _glued(name)
        page = _page(html, name)
        for key in ("paper", "ours", "verdict", "why"):
            value = glued.get(f"{name}_{key}")
            assert value, f"{name} glues no {name}_{key}"
            assert value in page, f"{name}: glued {key} not on the page"
            if key != "why":
                assert value in intro, f"intro: {name}'s {key} not in the headline table"
        assert ".ipynb::" not in re.sub(r"<[^>]+>", "", page), (
            f"{name}: an unresolved glue reference"
        )


def test_displayed_markdown_is_rendered_not_shown_as_source(smoke_book):
    _, html = smoke_book
    for name in EXPERIMENTS:
        text = re.sub(r"<[^>]+>", "", _page(html, name))
        assert "|---" not in text, f"{name}: a markdown table is shown as text"
        assert "**Verdict" not in text, f"{name}: markdown shown as text"


def test_tables_fit_the_content_column(smoke_book):
    _, html = smoke_book
    pages = [html / "intro.html", *(html / "experiments" / f"{n}.html" for n in EXPERIMENTS)]
    for page in pages:
        parser = _Tables()
        parser.feed(page.read_text(encoding="utf-8"))
        assert parser.rows, f"{page.name}: no table"
        assert max(parser.rows) <= MAX_COLUMNS, (
            f"{page.name}: a table has {max(parser.rows)} columns"
        )


def test_every_experiment_page_ends_with_its_provenance(smoke_book):
    _, html = smoke_book
    for name in EXPERIMENTS:
        assert_provenance_footer(_page(html, name), name)


def _row_numbered_tables(page: str) -> int:
    """Tables whose first header cell is empty and whose row headers are 0, 1, 2, ...: a
    pandas RangeIndex shown as a column of row numbers that mean nothing to a reader."""
    found = 0
    for table in re.findall(r"<table.*?</table>", page, flags=re.S):
        head = re.search(r"<thead>.*?<th[^>]*>(.*?)</th>", table, flags=re.S)
        body = re.search(r"<tbody>(.*?)</tbody>", table, flags=re.S)
        if not head or not body or head.group(1).strip():
            continue
        rows = re.findall(r"<tr>\s*<th[^>]*>(.*?)</th>", body.group(1), flags=re.S)
        found += bool(rows) and [r.strip() for r in rows] == [str(i) for i in range(len(rows))]
    return found


def test_no_table_shows_row_numbers_as_its_first_column(smoke_book):
    _, html = smoke_book
    shown = {name: _row_numbered_tables(_page(html, name)) for name in EXPERIMENTS}
    assert not any(shown.values()), f"tables with a row-number column: {shown}"
