"""A self-contained HTML page that replays the unmasking call by call.

One page, inline CSS and JavaScript, no external assets or URLs: open it from
disk, attach it to an issue, or screenshot it headless. Each row is a
generated sequence; masked positions are grey ``[M]`` boxes, and a position
revealed at a row's k-th call takes that call's colour, the same colours as
:func:`unmask.viz.terminal.call_colors` (early calls blue, late calls red).
Positions filled with EOS after an early exit (``FILLED``) appear, dimmed, at
the end. A position a revising planner overwrote or re-masked (a row's
optional fourth item, the calls of its revisions by position:
``Trace.revised(row)``) is drawn with a dashed border from its first revision
on, and its tooltip lists the revision calls. Play/pause, step buttons and a
slider move through the calls.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from ..output import FILLED
from .terminal import text_color_for, call_colors

Row = tuple  # (title, pieces, reveal_call) or (title, pieces, reveal_call, {position: [call or (call, ...), ...]})

REPLAY_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 18px; background: #fafafa; color: #222; }
h1 { font-size: 18px; margin: 0 0 10px 0; }
.controls { display: flex; align-items: center; gap: 8px; margin-bottom: 14px; }
.controls button { font-size: 14px; padding: 3px 10px; cursor: pointer; }
.controls input[type=range] { width: 320px; }
#label { font-family: monospace; font-size: 14px; min-width: 150px; }
.row { margin-bottom: 14px; }
.title { font-size: 13px; font-weight: 600; margin-bottom: 4px; }
.title .calls { font-weight: 400; color: #666; }
.tokens { display: flex; flex-wrap: wrap; gap: 2px; font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 15px; }
.tok { min-width: 13px; padding: 2px 3px; border-radius: 3px; text-align: center; white-space: pre; transition: background-color 0.2s; }
.tok.masked { background: #c8c8c8; color: #666; font-size: 11px; }
.tok.filled { background: #eeeeee; color: #aaa; }
.tok.new { outline: 2px solid #222; }
.tok.edited { border: 2px dashed #222; font-weight: 700; }
.legend { display: flex; gap: 2px; font-size: 11px; font-family: monospace; margin-top: 6px; }
.legend span { padding: 1px 4px; border-radius: 2px; }
"""

REPLAY_JS = """
const rows = DATA.rows;
const total = DATA.total;
let t = Math.max(0, Math.min(total, DATA.start < 0 ? total : DATA.start)), timer = null;
const slider = document.getElementById('slider');
slider.max = total;
function render() {
  slider.value = t;
  document.getElementById('label').textContent = t === 0 ? 'all masked' : (t >= total ? 'done' : 'after call ' + t);
  rows.forEach((row, r) => {
    row.calls.forEach((c, i) => {
      const el = document.getElementById('t' + r + '_' + i);
      let cls = 'tok', bg = '', fg = '', text = row.pieces[i];
      if (c === -1) {
        if (t >= total) { cls += ' filled'; } else { cls += ' masked'; text = '[M]'; }
      } else if (c < t) {
        bg = row.colors[c]; fg = row.fgs[c];
        if (c === t - 1 && t < total) cls += ' new';
        const e = row.edits && row.edits[i];  // rows streamed by the playground carry no edits
        if (e !== undefined && e[0] < t) cls += ' edited';
      } else { cls += ' masked'; text = '[M]'; }
      el.className = cls; el.style.backgroundColor = bg; el.style.color = fg; el.textContent = text;
    });
  });
}
function step(d) { t = Math.max(0, Math.min(total, t + d)); render(); }
function play() {
  if (timer) { clearInterval(timer); timer = null; document.getElementById('play').textContent = 'play'; return; }
  if (t >= total) t = 0;
  document.getElementById('play').textContent = 'pause';
  timer = setInterval(() => { if (t >= total) { play(); return; } step(1); }, DATA.interval);
}
slider.addEventListener('input', () => { t = parseInt(slider.value); render(); });
document.getElementById('play').addEventListener('click', play);
document.getElementById('back').addEventListener('click', () => step(-1));
document.getElementById('fwd').addEventListener('click', () => step(1));
document.getElementById('first').addEventListener('click', () => { t = 0; render(); });
document.getElementById('last').addEventListener('click', () => { t = total; render(); });
render();
"""


def replay_row(title: str, pieces: Sequence[str], reveal_call: Sequence[int], revised: dict | None = None) -> dict:
    """Normalise one row: its own calls start at 0; FILLED positions become -1; ``revised`` maps a position to its
    revisions (global calls, or ``(call, old, new)`` tuples as ``Trace.revised`` gives)."""
    calls = [int(c) for c in reveal_call]
    if len(calls) != len(pieces):
        raise ValueError(f"rows: {title!r} has {len(pieces)} pieces but {len(calls)} reveal calls")
    if any(c < 0 and c != FILLED for c in calls):
        raise ValueError(f"rows: {title!r} has reveal calls below 0 other than FILLED ({FILLED})")
    real = [c for c in calls if c != FILLED]
    first = min(real) if real else 0
    n = max(real) - first + 1 if real else 1
    colors = call_colors(n)
    return {
        "title": title,
        "pieces": [p.replace("\n", "\u21b5") for p in pieces],
        "calls": [-1 if c == FILLED else c - first for c in calls],
        "num_calls": n,
        "colors": colors,
        "fgs": [text_color_for(c) for c in colors],
        "edits": {int(pos): sorted(_call(e) - first for e in calls_) for pos, calls_ in (revised or {}).items()},
    }


def _call(revision: int | Sequence[int]) -> int:
    return int(revision) if isinstance(revision, int) else int(revision[0])


def reveal_html(rows: Sequence[Row], title: str = "unmask: reveal order", interval_ms: int = 600, start: int = 0) -> str:
    """The page as a string (see :func:`write_reveal_html`)."""
    if not rows:
        raise ValueError("rows must hold at least one (title, pieces, reveal_call) row")
    if interval_ms < 1:
        raise ValueError(f"interval_ms must be a positive int, got {interval_ms}")
    data = [replay_row(str(r[0]), list(r[1]), list(r[2]), r[3] if len(r) > 3 else None) for r in rows]
    total = max(r["num_calls"] for r in data)
    parts = [
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n",
        f"<title>{html.escape(title)}</title>\n<style>{REPLAY_CSS}</style>\n</head>\n<body>\n",
        f"<h1>{html.escape(title)}</h1>\n",
        "<div class='controls'><button id='first'>|&lt;</button><button id='back'>&lt;</button>"
        "<button id='play'>play</button><button id='fwd'>&gt;</button><button id='last'>&gt;|</button>"
        "<input type='range' id='slider' min='0' value='0'><span id='label'></span></div>\n",
    ]
    for r, row in enumerate(data):
        parts.append(f"<div class='row'><div class='title'>{html.escape(row['title'])} "
                     f"<span class='calls'>({row['num_calls']} calls)</span></div><div class='tokens'>")
        parts += [f"<span class='tok masked' id='t{r}_{i}'{_tip(row, i)}>{html.escape(p)}</span>"
                  for i, p in enumerate(row["pieces"])]
        parts.append("</div><div class='legend'>call:")
        parts += [f"<span style='background:{c};color:{f}'>{k + 1}</span>"
                  for k, (c, f) in enumerate(zip(row["colors"], row["fgs"]))]
        parts.append("</div></div>\n")
    payload = json.dumps({"rows": data, "total": total, "interval": interval_ms, "start": int(start)}).replace("</", "<\\/")
    parts.append(f"<script>\nconst DATA = {payload};\n{REPLAY_JS}</script>\n</body>\n</html>\n")
    return "".join(parts)


def _tip(row: dict, i: int) -> str:
    calls = row["edits"].get(i)
    return "" if not calls else f" title='revised at call {', '.join(str(c + 1) for c in calls)}'"


def write_reveal_html(path: str | Path, rows: Sequence[Row], title: str = "unmask: reveal order",
                      interval_ms: int = 600, start: int = 0) -> Path:
    """Write a self-contained page replaying each row's unmasking, call by call.

    ``rows``: ``(title, pieces, reveal_call)`` per sequence, ``pieces`` the
    per-token display strings (e.g. :func:`unmask.viz.token_pieces`) and
    ``reveal_call`` the global call index revealing each token
    (``Trace.reveal_call[i]``; ``FILLED`` for EOS filled after an early exit);
    an optional fourth item ``Trace.revised(i)`` marks the edited cells.
    ``start``: the number of calls shown when the page opens (-1: all, the end state).
    """
    path = Path(path)
    path.write_text(reveal_html(rows, title, interval_ms, start), encoding="utf-8")
    return path
