"""The leaderboard as a static web page: ``robrep leaderboard --html`` writes ``<out>/index.html``
and one page per encoder under ``<out>/encoders/``, next to the boards' CSVs, Markdown and PNGs.

Self-contained: the CSS and the script are inline, nothing is fetched (no server, no CDN), so a repository's
static hosting serves the folder as it is. The index holds the headline tables (``robrep.board.headline``) as one
table that sorts by any column and filters by data set, task and learner; the plots; the image grids. Each
encoder page holds every attack's rows, the checks and the learner config. The page's state (sort, filters)
lives in the URL's fragment (``#sort=r=0.1&dir=desc&dataset=mnist5k&learner=vae``), so a view can be linked
to, and a headless browser can open a given view (tests/board/test_site.py).

Every value from a CSV is escaped; file names are derived from SHA-256s and checked names only.
"""
from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import pandas as pd

from robrep.io import atomic_write
from robrep.board.headline import PLACE, checks_text, headline_table, radius_columns

log = logging.getLogger(__name__)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;max-width:1400px;color:#222;
padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.3rem .45rem;text-align:left;white-space:nowrap}
th{background:#f4f4f4;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.head{font-weight:bold}
tr.single td{color:#666}tr:hover td{background:#fafaf0}
.filters{display:flex;gap:1rem;margin:1rem 0;flex-wrap:wrap}.filters label{font-size:.9rem}
.note{color:#555;font-size:.9rem;max-width:60rem}.count{font-size:.85rem;color:#555}
img{max-width:100%;border:1px solid #eee;margin:.5rem 0}
.grids{display:flex;flex-wrap:wrap;gap:1rem}.grids figure{margin:0;max-width:48%}
figcaption{font-size:.8rem;color:#555}code,pre{font-size:.8rem}pre{background:#f7f7f7;padding:.6rem;overflow:auto}
.failed{color:#b00}
"""

SCRIPT = """
(function () {
  const table = document.getElementById('board');
  const body = table.tBodies[0];
  const heads = Array.from(table.tHead.rows[0].cells);
  const selects = Array.from(document.querySelectorAll('.filters select'));
  const count = document.getElementById('count');
  function state() {
    const s = {};
    for (const part of location.hash.replace(/^#/, '').split('&')) {
      if (!part) continue;
      const i = part.indexOf('=');
      s[decodeURIComponent(part.slice(0, i))] = decodeURIComponent(part.slice(i + 1));
    }
    return s;
  }
  function save(s) {
    const parts = Object.keys(s).filter(k => s[k] !== '' && s[k] !== undefined)
      .map(k => encodeURIComponent(k) + '=' + encodeURIComponent(s[k]));
    history.replaceState(null, '', '#' + parts.join('&'));
  }
  function value(row, key) {
    const cell = row.querySelector('td[data-key="' + CSS.escape(key) + '"]');
    if (!cell) return '';
    const v = cell.dataset.value;
    return v === undefined ? cell.textContent : v;
  }
  function apply() {
    const s = state();
    for (const sel of selects) sel.value = s[sel.name] || '';
    const rows = Array.from(body.rows);
    let shown = 0;
    for (const row of rows) {
      const keep = selects.every(sel => !sel.value || row.dataset[sel.name] === sel.value);
      row.hidden = !keep;
      if (keep) shown += 1;
    }
    const key = s.sort, dir = s.dir === 'asc' ? 1 : -1;
    for (const h of heads) h.removeAttribute('aria-sort');
    if (key) {
      const head = heads.find(h => h.dataset.key === key);
      if (head) {
        head.setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
        const numeric = head.dataset.type === 'num';
        rows.sort((a, b) => {
          let x = value(a, key), y = value(b, key);
          if (numeric) {
            x = x === '' ? -Infinity : parseFloat(x); y = y === '' ? -Infinity : parseFloat(y);
            return (x - y) * dir;
          }
          return x.localeCompare(y) * dir;
        });
        for (const row of rows) body.appendChild(row);
      }
    }
    count.textContent = shown + ' of ' + rows.length + ' rows shown';
  }
  for (const h of heads) {
    h.addEventListener('click', () => {
      const s = state();
      s.dir = s.sort === h.dataset.key && s.dir !== 'asc' ? 'asc' : 'desc';
      s.sort = h.dataset.key;
      save(s); apply();
    });
  }
  for (const sel of selects) {
    sel.addEventListener('change', () => { const s = state(); s[sel.name] = sel.value; save(s); apply(); });
  }
  window.addEventListener('hashchange', apply);
  apply();
})();
"""


def _e(value) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and value != value) else str(value))


def encoder_page_name(run: str, sha256: str) -> str:
    """A file name for an encoder's page: its SHA-256 prefix and a plain version of its run name."""
    plain = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(run))[:80]
    return f"{plain or 'encoder'}-{str(sha256)[:12]}.html"


ENCODER_PAGE_MARK = b'<p><a href="../index.html">&larr; leaderboard</a></p>'  # how an encoder page starts


def _page(title: str, body: str) -> str:
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def _headline_html(table: pd.DataFrame) -> str:
    radius_cols = radius_columns(table)
    cols = [("rank", "#", "num"), ("dataset", "data set", "text"), ("task", "task", "text"),
            ("norm", "norm", "text"), ("probe", "probe", "text"), ("label", "encoder", "text"), ("arch", "arch", "text"),
            ("clean", "clean", "num"), *[(c, c, "num") for c in radius_cols], ("measure", "measure", "text"),
            ("budget", "budget", "text"), ("n_examples", "points", "num"), ("label_fraction", "labels", "num"),
            ("checks", "checks", "text"), ("encoder_sha256", "encoder SHA-256", "text")]
    head = "".join(f'<th data-key="{_e(k)}" data-type="{t}" scope="col">{_e(name)}</th>' for k, name, t in cols)
    rows = []
    for _, r in table.iterrows():
        place = tuple(r[k] for k in PLACE)
        head_r = f"r={table.attrs['headline'][place]:g}"
        cells = []
        for k, _, t in cols:
            v = r[k]
            if k == "label":
                link = "encoders/" + encoder_page_name(r["run"], r["encoder_sha256"])
                cells.append(f'<td data-key="label"><a href="{_e(link)}">{_e(v)}</a></td>')
            elif k == "encoder_sha256":
                cells.append(f'<td data-key="{k}"><code>{_e(str(v)[:12])}</code></td>')
            elif t == "num":
                text = "" if v != v else (f"{v:.3f}" if isinstance(v, float) and k != "label_fraction" else f"{v:g}")
                css = "num head" if k == head_r else "num"
                cells.append(f'<td class="{css}" data-key="{_e(k)}" data-value="{"" if v != v else _e(v)}">'
                             f'{_e(text)}</td>')
            elif k == "checks":
                css = ' class="failed"' if v != "passed" else ""
                cells.append(f'<td data-key="checks"{css}>{_e(checks_text(r))}</td>')
            else:
                cells.append(f'<td data-key="{_e(k)}">{_e(v)}</td>')
        single = "" if str(r["measure"]).startswith("worst case") else ' class="single"'
        data = " ".join(f'data-{k}="{_e(r[k])}"' for k in ("dataset", "task", "learner"))
        rows.append(f"<tr{single} {data}>" + "".join(cells) + "</tr>")
    return (f'<table id="board"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(rows) + "\n</tbody></table>")


def _filters(table: pd.DataFrame) -> str:
    out = []
    for key, name in (("dataset", "data set"), ("task", "task"), ("learner", "learner")):
        options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in sorted(table[key].astype(str).unique()))
        out.append(f'<label>{_e(name)} <select name="{key}"><option value="">all</option>{options}</select></label>')
    return '<div class="filters">' + "".join(out) + '<span id="count" class="count"></span></div>'


def _encoder_page(rows: pd.DataFrame) -> str:
    first = rows.iloc[0]
    title = f"{first['label']} ({first['run']})"
    prov = [("learner", first["learner"]), ("label", first["label"]), ("architecture", first.get("arch", "")),
            ("run", first["run"]), ("encoder SHA-256", first["encoder_sha256"]), ("source", first.get("source", "")),
            ("robrep", first.get("robrep_version", "")), ("torch", first.get("torch_version", "")),
            ("machine", first.get("machine", "")), ("training seconds", first.get("train_seconds", ""))]
    dl = "".join(f"<tr><th scope=\"row\">{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in prov)
    try:
        config = json.dumps(json.loads(first["learner_config"]), indent=2, sort_keys=True)
    except (TypeError, ValueError):
        config = str(first.get("learner_config", ""))
    cols = ["dataset", "task", "n_examples", "label_fraction", "seed", "suite", "attack", "steps", "restarts",
            "radius", "nominal_accuracy", "adversarial_accuracy", "noise_accuracy", "late_share", "explored_share",
            "checks_passed", "warnings"]
    cols = [c for c in cols if c in rows.columns]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    order = rows.sort_values(["dataset", "task", "n_examples", "label_fraction", "suite", "attack", "radius"])
    for _, r in order.iterrows():
        tds = []
        for c in cols:
            v = r[c]
            text = f"{v:.3f}" if isinstance(v, float) and c.endswith(("accuracy", "share")) and v == v else _e(v)
            css = ' class="failed"' if c == "checks_passed" and not bool(v) else ""
            tds.append(f"<td{css}>{text}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    thresholds = next((t for t in rows.get("check_thresholds", pd.Series(dtype=object)) if isinstance(t, str) and t),
                      "")
    checks = ""
    if thresholds:
        try:
            checks = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in json.loads(thresholds).items())
        except ValueError:
            checks = f"<li>{_e(thresholds)}</li>"
    return _page(title, f"""<p><a href="../index.html">&larr; leaderboard</a></p>
<h1>{_e(title)}</h1>
<table>{dl}</table>
<h2>Learner config</h2><pre>{_e(config)}</pre>
<h2>The checks every row records</h2><ul>{checks or "<li>(rows from before the checks)</li>"}</ul>
<h2>Every attack's rows ({len(rows)})</h2>
<table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>""")


def _unranked(out: Path) -> str:
    """Links to the boards published beside the standard ones and never ranked with them."""
    parts = []
    for sub, what in (("experiments", "runs under other protocols (the paper's figures, quick runs, sweeps)"),
                      ("archive", "rows recorded before the checks existed")):
        boards = sorted((out / sub).glob("*.md")) if (out / sub).is_dir() else []
        if boards:
            links = ", ".join(f'<a href="{_e(sub)}/{_e(b.name)}">{_e(b.stem)}</a> '
                              f'(<a href="{_e(sub)}/{_e(b.stem)}.png">plot</a>)' for b in boards)
            parts.append(f"<li><b>{_e(sub)}</b>: {_e(what)}: {links}</li>")
    return f"<h2>Not ranked</h2><ul>{''.join(parts)}</ul>" if parts else ""


def write_site(board: pd.DataFrame, out: str | Path) -> Path:
    """Write ``<out>/index.html`` and ``<out>/encoders/*.html`` for ``board`` (every board's rows, as
    ``robrep.board.leaderboard.read_boards`` gives them); returns the index's path. The PNGs it shows are the
    boards' own (``<dataset>-<norm>.png``) and the image grids in ``<out>/images/``."""
    out = Path(out)
    table = headline_table(board)
    plots = sorted(name for name in {f"{d}-{n}.png" for d, n in zip(board["dataset"], board["norm"])}
                   if (out / name).is_file())  # the boards' own plots
    grids = sorted(p.name for p in (out / "images").glob("*.png")) if (out / "images").is_dir() else []
    pages = {}
    for (run, sha), rows in board.groupby(["run", "encoder_sha256"], sort=True):
        name = encoder_page_name(run, sha)
        pages[name] = _encoder_page(rows)
    figures = "".join(f'<figure><img src="{_e(p)}" alt="{_e(p)}" loading="lazy"><figcaption>{_e(p)}</figcaption>'
                      f"</figure>" for p in plots)
    grid_html = "".join(f'<figure><img src="images/{_e(g)}" alt="{_e(g)}" loading="lazy">'
                        f"<figcaption>{_e(g)}</figcaption></figure>" for g in grids)
    index = _page("robrep leaderboard", f"""<h1>robrep leaderboard: how robust is this representation, really?</h1>
<p class="note">One board per standard protocol (data set, threat model, radii, test points, probe labels, the
ten attacks and their budgets), ranking only entries of exactly that protocol whose checks passed and whose claims
robrep verify confirmed: a linear probe on the frozen encoder, attacked as probe&#8728;encoder. Ranked by the worst case over every attack of the protocol at the headline
radius (bold); a grey row is an encoder with a single attack (an upper bound). Click a column to sort, choose a data
set, task or learner to filter; the encoder's name opens every attack's row, its checks and its config. Generated by
<code>robrep leaderboard --html</code> from the CSVs beside this page.</p>
{_filters(table)}
{_headline_html(table)}
<h2>Robustness curves</h2>
<div class="grids">{figures}</div>
<h2>Clean and adversarial images, and their reconstructions</h2>
<div class="grids">{grid_html or "<p>(none published)</p>"}</div>
{_unranked(out)}
<script>{SCRIPT}</script>""")
    for name, text in pages.items():
        atomic_write(out / "encoders" / name, text.encode())
    for stale in (out / "encoders").glob("*.html"):  # pages of encoders no longer on a board; only robrep's own
        if stale.name not in pages and ENCODER_PAGE_MARK in stale.read_bytes():
            stale.unlink()
    atomic_write(out / "index.html", index.encode())
    log.info("wrote %s and %d encoder page(s)", out / "index.html", len(pages))
    return out / "index.html"
