"""Sphinx helpers of the ttlib book (loaded through ``local_extensions`` in _config.yml).

* ``autodoc-process-docstring`` hook: the package's docstrings are written as plain text
  with maths such as ``|τ - 1(x < 0)|`` and ``K²`` after inline code. reStructuredText
  reads the first as a substitution reference and rejects the second as an unterminated
  literal, and either fails the warning-free build. The hook escapes exactly those two
  patterns (outside inline code and literal blocks), so the modules need no change and
  render the text as written.
* ``doctree-read`` hook: a page that pastes values glued in a notebook page
  (``{glue:text}`experiments/x.ipynb::key```) is marked as depending on that notebook, so an
  incremental build re-renders it when the notebook changes instead of keeping stale values.
* ``preset-table`` directive: one experiment's knobs in every preset, read from the
  repository's ``_config.yml`` when the book is built (nothing is copied by hand).
* ``verdict-table`` directive: the intro's headline table (experiment, paper, ours,
  verdict), read from the verdicts each experiment page glues (``<name>_paper``, ``_ours``,
  ``_verdict``); a page executed before it computed a verdict says so instead.
* ``paper-table`` directive: a table of the paper's numbers read from
  ``results/paper/paper_numbers.csv``, with the source of every column.
* ``source-read`` hook: a notebook's parameters cell (tagged ``parameters``: ``preset =
  "smoke"`` and the overrides, all None) and the cell papermill adds after it when it runs a
  preset (``injected-parameters``: ``preset = "cpu"``) are plumbing whose content the page's
  provenance footer states; both are removed from the page as it is read (current notebooks
  tag the first ``remove-cell`` themselves), and the executed notebook stays as it was run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PRESETS_FILE = ROOT / "_config.yml"

# |text| that docutils would parse as a substitution reference: a bar after whitespace or
# an opening bracket, text that neither starts nor ends with a space, a bar before whitespace
# or punctuation.
_SUBSTITUTION = re.compile(r"(?<![^\s(\[{<'\"])\|(?=\S)([^|\n]*?\S)\|(?=[\s.,;:!?)\]}'\"·²]|$)")
# the end of an inline literal glued to a following character that is not a delimiter
_GLUED_LITERAL_END = re.compile(r"(``[^`\s](?:[^`]*[^`\s])?``)(?=[^\s\\/:.,;!?)\]}'\"\-`])")
_INLINE_LITERAL = re.compile(r"``.+?``")


def _fix_line(line: str) -> str:
    line = _GLUED_LITERAL_END.sub(r"\1\\ ", line)
    out, last = [], 0
    for m in _INLINE_LITERAL.finditer(line):  # leave inline code untouched
        out.append(_SUBSTITUTION.sub(r"\\|\1\\|", line[last : m.start()]))
        out.append(m.group(0))
        last = m.end()
    out.append(_SUBSTITUTION.sub(r"\\|\1\\|", line[last:]))
    return "".join(out)


def escape_plain_text_maths(app, what, name, obj, options, lines: list[str]) -> None:
    literal_indent: int | None = None  # indentation of the paragraph that opened a :: block
    previous_indent = 0
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if line.strip() and indent <= literal_indent:
                literal_indent = None
            else:
                continue
        if line.strip():
            lines[i] = _fix_line(line)
            previous_indent = indent
        if line.rstrip().endswith("::"):
            literal_indent = previous_indent


def note_glue_sources(app, doctree) -> None:
    try:
        from myst_nb.ext.glue.utils import PendingGlueReference
    except ImportError:  # another myst-nb layout: nothing to track
        return
    env = app.env
    for node in doctree.findall(PendingGlueReference):
        if node.refdoc != env.docname:
            env.note_dependency(str(env.doc2path(node.refdoc)))


def _cell(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return "" if value is None else str(value)


class PresetTable(SphinxDirective):
    """``{preset-table} experiment``: its knobs (rows) in every preset (columns)."""

    required_arguments = 1
    option_spec = {"name": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        experiment = self.arguments[0]
        self.env.note_dependency(str(PRESETS_FILE))
        presets = yaml.safe_load(PRESETS_FILE.read_text(encoding="utf-8"))
        names = [p for p, block in presets.items() if experiment in (block or {})]
        if not names:
            raise self.error(f"no preset in {PRESETS_FILE.name} has an entry {experiment!r}")
        knobs = list(dict.fromkeys(k for p in names for k in presets[p][experiment]))
        header = ["knob", *names]
        body = [
            [nodes.literal(k, k), *(_cell(presets[p][experiment].get(k)) for p in names)]
            for k in knobs
        ]
        table = _table(header, body)
        title = nodes.title("", "Knobs of ")
        title += nodes.literal(experiment, experiment)
        title += nodes.Text(" in each preset of _config.yml")
        table.insert(0, title)
        if "name" in self.options:
            self.add_name(table)
        return [table]


def _table(header: list[str], body: list[list], title: str | None = None) -> nodes.table:
    """A docutils table; a cell is text, a docutils node, or ("html", markup) for pasted HTML."""
    table = nodes.table(classes=["colwidths-auto"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    for part, rows in ((nodes.thead(), [header]), (nodes.tbody(), body)):
        for row in rows:
            tr = nodes.row()
            for value in row:
                entry = nodes.entry()
                para = nodes.paragraph()
                if isinstance(value, tuple):
                    para += nodes.raw("", value[1], format="html")
                elif isinstance(value, nodes.Node):
                    para += value
                else:
                    para += nodes.Text(str(value))
                entry += para
                tr += entry
            part += tr
        group += part
    if title:
        table.insert(0, nodes.title("", title))
    return table


GLUE_PREFIX = "application/papermill.record/"


def notebook_glue(path: Path) -> dict[str, dict]:
    """The glued values of an executed notebook: key -> {mime type: data}."""
    import json

    if not path.exists():
        return {}
    out = {}
    for cell in json.loads(path.read_text(encoding="utf-8")).get("cells", []):
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                data = output.get("data", {})
                out[name] = {k[len(GLUE_PREFIX) :]: v for k, v in data.items()}
    return out


class VerdictTable(SphinxDirective):
    """``{verdict-table}`` with one ``doc: title`` line per experiment page in its body."""

    has_content = True
    option_spec = {"name": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        from sphinx.addnodes import pending_xref

        body = []
        for line in self.content:
            if not line.strip():
                continue
            doc, title = (part.strip() for part in line.split(":", 1))
            name = Path(doc).name
            path = Path(self.env.relfn2path(doc + ".ipynb", self.env.docname)[1])
            self.env.note_dependency(str(path))
            glued = notebook_glue(path)
            link = pending_xref(
                "",
                refdomain="std",
                reftype="doc",
                reftarget="/" + doc,
                refexplicit=True,
                refwarn=True,
            )
            link += nodes.inline(title, title)
            cells = []
            for key in ("paper", "ours", "verdict"):
                html = glued.get(f"{name}_{key}", {}).get("text/html")
                if not html:  # a page run before it computed its verdict: run it again
                    log.warning(f"{doc}.ipynb glues no {name}_{key}; re-execute the page",
                                location=self.get_location())  # fmt: skip
                    html = "missing"
                cells.append(("html", "".join(html) if isinstance(html, list) else html))
            body.append([link, *cells])
        table = _table(["experiment", "the paper", "this run", "verdict"], body)
        if "name" in self.options:
            self.add_name(table)
        return [table]


PAPER_CSV = ROOT / "results" / "paper" / "paper_numbers.csv"


class PaperTable(SphinxDirective):
    """``{paper-table} d4rl`` with ``:methods: BC, CQL`` : one row per dataset (and the
    printed average), a column per method, each number as printed, from PAPER_CSV."""

    required_arguments = 1
    option_spec = {"methods": directives.unchanged_required, "name": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        import csv

        self.env.note_dependency(str(PAPER_CSV))
        with PAPER_CSV.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["table"] == self.arguments[0]]
        methods = [m.strip() for m in self.options["methods"].split(",")]
        cells: dict[tuple[str, str], dict[str, str]] = {}
        for r in rows:
            text = r["value"] + (f" ± {r['se']}" if r["se"] else "")
            cells.setdefault((r["env"], r["dataset"]), {})[r["method"]] = text
        body = []
        for (env, dataset), by_method in cells.items():
            label = "Average" if dataset == "average" else f"{env} {dataset}".strip()
            body.append([label, *(by_method.get(m, "") for m in methods)])
        table = _table(["dataset", *methods], body)
        if "name" in self.options:
            self.add_name(table)
        return [table]


PARAMETER_TAGS = ("parameters", "injected-parameters")


def remove_parameter_cells(app, docname: str, source: list[str]) -> None:
    """Tag the parameters cells ``remove-cell`` in a notebook page's source."""
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    nb = json.loads(source[0])
    for cell in nb["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if set(PARAMETER_TAGS) & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    source[0] = json.dumps(nb)


def setup(app):
    app.connect("source-read", remove_parameter_cells)
    app.connect("autodoc-process-docstring", escape_plain_text_maths)
    app.connect("doctree-read", note_glue_sources)
    app.add_directive("preset-table", PresetTable)
    app.add_directive("verdict-table", VerdictTable)
    app.add_directive("paper-table", PaperTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
