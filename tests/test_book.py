"""The Jupyter Book builds offline, with zero warnings, and needs no remote asset to render.

The book is built once per test session into a temporary folder (never into book/_build),
exactly as CI builds it: ``jupyter-book build book/ -W --keep-going``.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_book_companion import assert_provenance_footer, assert_verdict_box

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
RESULTS = ROOT / "results"

# Page file in the HTML output -> a sentence fragment that must be on it.
PAGES = {
    "intro.html": "The Trajectory Transformer, reproduced",
    "method.html": "Planning with beam search",
    "reproducing.html": "Where results land",
    "performance.html": "Performance of the planner",
    "differences.html": "D4RL-style, not D4RL",
    "api.html": "API reference",
    "experiments/prediction.html": "Long-horizon prediction",
    "experiments/attention.html": "Attention patterns of a trained Trajectory Transformer",
    "experiments/imitation.html": "Imitation: likelihood beam search on expert data",
    "experiments/goal_reaching.html": "Goal reaching in four rooms",
    "experiments/d4rl.html": "D4RL locomotion: the offline-RL table",
    "experiments/maze_q.html": "Q-guided beam search on sparse-reward mazes",
    "experiments/antmaze.html": "AntMaze: TT(+Q) on ant mazes generated here",
    "compute.html": "How much compute does TT need?",
    "experiments/compute_study.html": "Score against training tokens",
}
FIGURES = ("tokenisation.svg", "discretizers.svg", "beam_search.svg")
MATHJAX = "_static/mathjax/tex-svg-full.js"


pytestmark = pytest.mark.slow  # builds the whole book (minutes)


@pytest.fixture(scope="module")
def built_book(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("book")
    cmd = [
        sys.executable,
        "-c",
        "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
        "build",
        str(BOOK),
        "--path-output",
        str(out),
        "-W",
        "--keep-going",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return result, out / "_build" / "html"


class _AssetCollector(HTMLParser):
    """Collects the URLs of scripts, stylesheets and images a page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "img") and a.get("src"):
            self.assets.append(a["src"])
        rel = set((a.get("rel") or "").lower().split())
        if tag == "link" and a.get("href") and rel & {"stylesheet", "preload", "modulepreload"}:
            self.assets.append(a["href"])


def _assets(page: Path) -> list[str]:
    parser = _AssetCollector()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.assets


def test_book_builds_with_zero_warnings(built_book):
    result, html = built_book
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"jupyter-book build failed:\n{log[-4000:]}"
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert not warnings, "the book build warned:\n" + "\n".join(warnings)
    assert (html / "index.html").is_file()


def test_published_pages_show_no_parameters_cell(built_book):
    _, html = built_book
    shown = []
    for page in PAGES:
        if page.startswith("experiments/"):
            text = re.sub(r"<[^>]+>", "", (html / page).read_text(encoding="utf-8"))
            shown += [page] if "preset = " in text else []
    assert not shown, f"parameters (or papermill's injected ones) shown on {shown}"


def test_every_page_is_built_with_its_text(built_book):
    _, html = built_book
    for page, text in PAGES.items():
        path = html / page
        assert path.is_file(), f"{page} missing from the build"
        assert text in path.read_text(encoding="utf-8"), f"{page} lacks {text!r}"


def test_no_page_loads_a_remote_script_stylesheet_or_image(built_book):
    _, html = built_book
    pages = sorted(html.glob("*.html"))
    assert pages
    for page in pages:
        for url in _assets(page):
            parts = urlsplit(url)
            assert not (parts.scheme or url.startswith("//")), f"{page.name} loads remote {url}"
            if parts.scheme == "" and parts.path and not url.startswith("data:"):
                local = (page.parent / parts.path).resolve()
                assert local.is_file(), f"{page.name} loads {url}, which is not in the build"


def test_math_is_typeset_by_the_bundled_mathjax(built_book):
    _, html = built_book
    method = html / "method.html"
    assert any(urlsplit(u).path == MATHJAX for u in _assets(method))
    assert (html / MATHJAX).stat().st_size > 1_000_000
    text = method.read_text(encoding="utf-8")
    assert r"V_t \;=\; \sum_{k \ge 1}" in text  # TeX source is in the page for MathJax


def test_method_figures_are_in_the_build(built_book):
    _, html = built_book
    for name in FIGURES:
        assert (html / "_images" / name).is_file(), f"figure {name} missing"


def test_paper_numbers_are_labelled_as_the_papers(built_book):
    _, html = built_book
    for page in ("intro.html", "differences.html"):
        text = (html / page).read_text(encoding="utf-8")
        assert "not reproduced here" in text, f"{page}: paper table lacks its label"


def test_api_page_is_rendered_by_autodoc_not_left_as_raw_rst(built_book):
    _, html = built_book
    text = (html / "api.html").read_text(encoding="utf-8")
    assert 'id="ttlib.discretize.QuantileDiscretizer"' in text
    assert ".. py:" not in text and ".. automodule::" not in text


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _text(page: Path) -> str:
    """The page's visible text, whitespace collapsed (for checking table contents)."""
    import html as html_lib

    raw = page.read_text(encoding="utf-8")
    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", " ", raw)))


def test_no_table_has_an_empty_header_cell(built_book):
    # a CSV header starting with "%" is a MyST comment and silently vanishes
    _, html = built_book
    for page in ("performance.html", "reproducing.html"):
        text = (html / page).read_text(encoding="utf-8")
        assert '<th class="head"></th>' not in text, f"{page} has an empty table header"


def test_performance_page_shows_the_benchmark_figure_and_tables(built_book):
    _, html = built_book
    assert (html / "_images" / "planning.svg").is_file(), "planning figure missing"
    page = (html / "performance.html").read_text(encoding="utf-8")
    assert "planning.svg" in page
    text = _text(html / "performance.html")
    for name in (
        "summary.csv",
        "agreement.csv",
        "training.csv",
        "roofline.csv",
        "memory_bandwidth.csv",
        "window_effect_summary.csv",
        "eval_throughput.csv",
    ):
        rows = _csv_rows(RESULTS / "benchmarks" / name)
        assert rows, f"{name} is empty"
        for header in rows[0]:
            assert header in text, f"{name}: column {header!r} not on the page"
        for row in rows:
            for value in row.values():
                assert value in text, f"{name}: value {value!r} not on the page"


def test_reproducing_page_lists_every_published_run_and_the_presets(built_book):
    _, html = built_book
    text = _text(html / "reproducing.html")
    runs = _csv_rows(RESULTS / "runs.csv")
    assert runs
    for run in runs:
        for column in ("experiment", "command", "notebook_min", "total_compute_min", "commits"):
            assert run[column] in text, f"runs.csv {column} {run[column]!r} not on the page"
    assert text.count("in each preset of _config.yml") >= 6, "a preset table is missing"


def test_intro_has_the_headline_table_of_verdicts(built_book):
    # one row per experiment page: its glued claim, result and verdict, or, for a page
    # executed before the pages computed verdicts, a note saying so
    _, html = built_book
    text = _text(html / "intro.html")
    head = text[text.find("Headline results #") : text.find("What the paper reported #")]
    assert "experiment the paper this run verdict" in head
    for title in (
        "Long-horizon prediction",
        "Attention patterns",
        "Imitation by likelihood",
        "Four-rooms goal reaching",
        "D4RL locomotion",
        "Q-guided search",
    ):
        assert title in head, title
    verdicts = ("reproduced", "partly", "not at this scale")
    assert sum(head.count(v) for v in verdicts) >= 8
    assert ".ipynb::" not in head and "missing" not in head


def test_every_published_experiment_page_has_its_verdict_box_and_provenance(built_book):
    # the published pages, not only the smoke ones of test_book_companion: a page executed
    # before the pages computed verdicts and recorded their provenance must be re-executed
    _, html = built_book
    for page in PAGES:
        if page.startswith("experiments/"):
            raw = (html / page).read_text(encoding="utf-8")
            assert_verdict_box(raw, page)
            assert_provenance_footer(raw, page)


def test_no_page_shows_stderr(built_book):
    _, html = built_book
    for page in html.rglob("*.html"):
        assert 'class="output stderr' not in page.read_text(encoding="utf-8"), page.name


def test_rollout_gifs_are_in_the_build(built_book):
    _, html = built_book
    shown = {p.name for p in (html / "_images").glob("*.gif")}
    assert "episode.gif" in shown  # four rooms
    assert "tt_halfcheetah.gif" in shown  # a locomotion rollout of the planner


def _package_modules() -> list[str]:
    """Public modules of ttlib and its folders that git tracks, as dotted names below ttlib
    (a module still being written is not yet expected in the book); every module on disk
    when git is not available."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "ttlib/*.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        paths = [Path(p) for p in out]
    except (OSError, subprocess.CalledProcessError):
        paths = [p.relative_to(ROOT) for p in (ROOT / "ttlib").rglob("*.py")]
    names = [".".join(p.relative_to("ttlib").with_suffix("").parts) for p in paths]
    return sorted(n for n in names if not n.split(".")[-1].startswith("_"))


def test_api_page_documents_every_module(built_book):
    _, html = built_book
    text = (html / "api.html").read_text(encoding="utf-8")
    modules = _package_modules()
    assert modules
    missing = [m for m in modules if f'id="module-ttlib.{m}"' not in text]
    assert not missing, f"book/api.md lacks an automodule for: {missing}"


def test_d4rl_page_renders_the_table_with_the_papers_columns(built_book):
    _, html = built_book
    text = _text(html / "experiments" / "d4rl.html")
    rows = _csv_rows(RESULTS / "d4rl" / "table.csv")
    assert len(rows) >= 2, "the D4RL table has no rows"
    for header in rows[0]:
        assert header in text, f"table.csv column {header!r} not on the D4RL page"
    for row in rows:
        for value in row.values():
            assert value in text, f"table.csv value {value!r} not on the D4RL page"
    from ttlib.experiments.paper import paper_value

    paper_average = f"{paper_value('d4rl', 'TT (quantile)', '', 'average'):.1f}"
    assert paper_average in text, "the paper's numbers must be on the D4RL page too"
    page = (html / "experiments" / "d4rl.html").read_text(encoding="utf-8")
    assert page.count("<img") >= 2, "the D4RL page should show its score and loss figures"


def test_experiment_pages_show_their_rollout_gifs(built_book):
    _, html = built_book
    pages = {
        "goal_reaching.html": ["episode.gif"],
        "imitation.html": ["tt_halfcheetah.gif", "tt_hopper.gif", "tt_walker2d.gif"],
    }
    for page, gifs in pages.items():
        text = (html / "experiments" / page).read_text(encoding="utf-8")
        for gif in gifs:
            assert re.search(r'<img[^>]+src="[^"]*' + re.escape(gif), text), f"{page}: {gif}"


# myst-nb's {glue:text} splits a format spec off at the last colon, so `page.ipynb::key`
# reads as key "page.ipynb:" with spec "key" and pastes nothing (a warning only a full book
# build shows). Cross-document text pastes need an explicit spec: `page.ipynb::key:.1f`.
_GLUE_TEXT = re.compile(r"\{glue:text\}`([^`]*)`")


def test_glue_text_roles_with_a_document_path_carry_a_format_spec():
    notebooks = [*(ROOT / "notebooks").glob("*.ipynb"), *(RESULTS / "executed").glob("*.ipynb")]
    sources = [*notebooks, *BOOK.rglob("*.md")]
    bad = []
    for path in sources:
        if "_build" in path.parts:
            continue
        for content in _GLUE_TEXT.findall(path.read_text(encoding="utf-8")):
            if "::" in content and ":" not in content.split("::", 1)[1]:
                bad.append(f"{path.name}: {{glue:text}}`{content}`")
    assert not bad, "add a format spec (e.g. :s or :.1f):\n" + "\n".join(bad)
