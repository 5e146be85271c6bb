"""The playground page served at ``/``: a prompt box, a planner selector and the live canvas.

One self-contained page (inline CSS and JavaScript, no external assets: it
works on a machine with no network). It posts a streaming completion with
``reveal_events: true`` and paints each call's revealed tokens as they
arrive, in the colours and boxes of the HTML replay (:mod:`unmask.viz.html`,
whose stylesheet it uses). When the answer is complete, the replay's own
script (its play/step buttons and slider) runs on the final reveal order, so
the unmasking can be stepped through call by call. Query parameters fill the
form (``prompt``, ``planner``, ``max_tokens``, ``block_length``,
``temperature``, ``n``, ``seed``) and ``autorun=1`` submits it on load.
A server started with an API key gets an API key field. A failed request
shows its status and its body's message, or the body's text when it is not
JSON (a proxy's error page).
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

from ..viz.html import REPLAY_CSS, REPLAY_JS

if TYPE_CHECKING:
    from .plan import Served

PRESETS = (
    "dilated", "dilated(base=3)", "binary", "topk(counts='dilated')", "topk(score='margin', counts='dilated')",
    "eb(gamma=1.0)", "threshold(tau=0.9)", "spaced(eb(gamma=2), start_stride=8)",
)

_PAGE_CSS = """
form { display: flex; flex-wrap: wrap; align-items: end; gap: 10px; margin-bottom: 12px; }
form label { display: flex; flex-direction: column; font-size: 12px; color: #555; gap: 2px; }
form input, form select { font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 14px; padding: 3px 5px; }
#prompt { width: 340px; } #spec { width: 300px; } .num { width: 70px; }
#go { font-size: 14px; padding: 4px 16px; cursor: pointer; }
#status { font-family: monospace; font-size: 13px; color: #444; margin-bottom: 10px; min-height: 16px; }
#status.err { color: #b00020; }
.answer { font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 13px; color: #333; margin-top: 4px; white-space: pre-wrap; }
.controls button:disabled, .controls input:disabled { opacity: 0.4; }
"""

_PLAYGROUND_JS = r"""
const REPLAY = CONFIG.replay;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
for (const k of ['prompt', 'max_tokens', 'block_length', 'temperature', 'n', 'seed']) { if (params.has(k)) $(k).value = params.get(k); }
if (params.has('planner')) $('spec').value = params.get('planner');
$('preset').addEventListener('change', () => { $('spec').value = $('preset').value; });
let palette = null, lastNew = [];

// errorText: the line shown for a failed response, whose body may not be JSON (a proxy's page, a plain 503)
async function errorText(res) {
  const text = await res.text();
  try { const e = JSON.parse(text); if (e && e.error && e.error.message) return 'error ' + res.status + ': ' + e.error.message; } catch (_) {}
  const shown = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300);
  return 'error ' + res.status + (res.statusText ? ' ' + res.statusText : '') + ': ' + (shown || '(empty body)');
}
// end errorText
function status(text, err) { $('status').textContent = text; $('status').className = err ? 'err' : ''; }
function setControls(on) { for (const id of ['first', 'back', 'play', 'fwd', 'last', 'slider']) $(id).disabled = !on; }
function freshControls() {  // drop the listeners a previous replay attached (and stop its timer)
  if ($('play').textContent === 'pause') $('play').click();
  for (const id of ['first', 'back', 'play', 'fwd', 'last', 'slider']) { const el = $(id); el.replaceWith(el.cloneNode(true)); }
  setControls(false); $('label').textContent = '';
}
function buildRows(n, width) {
  const box = $('rows'); box.innerHTML = '';
  for (let r = 0; r < n; r++) {
    const row = document.createElement('div'); row.className = 'row';
    row.innerHTML = "<div class='title'>choice " + r + " <span class='calls' id='calls" + r + "'></span></div>"
      + "<div class='tokens' id='tokens" + r + "'></div><div class='legend' id='legend" + r + "'></div>"
      + "<div class='answer' id='answer" + r + "'></div>";
    box.appendChild(row);
    const toks = row.querySelector('.tokens');
    for (let i = 0; i < width; i++) {
      const el = document.createElement('span'); el.className = 'tok masked'; el.id = 't' + r + '_' + i; el.textContent = '[M]';
      toks.appendChild(el);
    }
  }
}
function paintCall(ev) {
  lastNew.forEach((el) => el.classList.remove('new')); lastNew = [];
  const c = Math.min(ev.call, palette.colors.length - 1);
  for (const row of ev.rows) {
    row.positions.forEach((p, j) => {
      const el = $('t' + row.index + '_' + p);
      el.className = 'tok new'; el.textContent = row.pieces[j].replace(/\n/g, '\u21b5');
      el.style.backgroundColor = palette.colors[c]; el.style.color = palette.fgs[c]; lastNew.push(el);
    });
  }
  $('label').textContent = 'call ' + (ev.call + 1);
}
function finish(ev, t0) {
  const rows = ev.rows.slice().sort((a, b) => a.index - b.index);
  rows.forEach((row) => {
    $('calls' + row.index).textContent = '(' + row.num_calls + ' calls)';
    $('legend' + row.index).innerHTML = 'call:' + row.colors.map((c, k) =>
      "<span style='background:" + c + ";color:" + row.fgs[k] + "'>" + (k + 1) + '</span>').join('');
  });
  const total = Math.max(...rows.map((r) => r.num_calls));
  new Function('DATA', REPLAY)({rows: rows, total: total, interval: 400, start: -1});
  setControls(true);
  status('done in ' + Math.round(performance.now() - t0) + ' ms: ' + rows.map((r) => r.num_calls).join(', ') + ' calls');
}
function onData(data, t0) {
  if (data === '[DONE]') return;
  const obj = JSON.parse(data);
  if (obj.error) { status('error: ' + obj.error.message, true); return; }
  if (obj.object === 'unmask.reveal') {
    const ev = obj.reveal;
    if (ev.type === 'start') { palette = ev; buildRows(Number($('n').value) || 1, ev.gen_length); }
    else if (ev.type === 'call') paintCall(ev);
    else if (ev.type === 'done') finish(ev, t0);
    return;
  }
  for (const ch of obj.choices) { const el = $('answer' + ch.index); if (el) el.textContent += ch.text; }
}
async function run() {
  freshControls(); status('generating...', false);
  const body = {prompt: $('prompt').value, planner: $('spec').value, stream: true, reveal_events: true};
  for (const k of ['max_tokens', 'block_length', 'n', 'seed']) if ($(k).value !== '') body[k] = Number($(k).value);
  if ($('temperature').value !== '') body.temperature = Number($('temperature').value);
  const headers = {'Content-Type': 'application/json'};
  if ($('api_key') && $('api_key').value) headers.Authorization = 'Bearer ' + $('api_key').value;
  const t0 = performance.now();
  try {
    const res = await fetch('/v1/completions', {method: 'POST', headers: headers, body: JSON.stringify(body)});
    if (!res.ok) { status(await errorText(res), true); return; }
    const reader = res.body.getReader(), dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, cut); buf = buf.slice(cut + 2);
        for (const line of event.split('\n')) if (line.startsWith('data: ')) onData(line.slice(6), t0);
      }
    }
  } catch (err) {  // the network, or a stream line that is not JSON
    status('error: ' + err.message, true);
  }
}
$('form').addEventListener('submit', (e) => { e.preventDefault(); run(); });
setControls(false);
if (params.get('autorun') === '1') run();
"""


def _example(served: Served) -> str:
    if served.settings.model_name == "tiny-arith":
        from ..tiny import heldout

        return heldout(1)[0].prompt
    return ""


def playground_html(served: Served) -> str:
    """The page for one server: its model's name, defaults and an example prompt."""
    s = served.settings
    options = "".join(f"<option{' selected' if p == s.planner else ''}>{html.escape(p)}</option>"
                      for p in dict.fromkeys((s.planner, *PRESETS)))
    config = json.dumps({"replay": REPLAY_JS}).replace("</", "<\\/")
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n<link rel='icon' href='data:,'>\n"
        f"<title>unmask playground: {html.escape(s.model_name)}</title>\n<style>{REPLAY_CSS}{_PAGE_CSS}</style>\n</head>\n<body>\n"
        f"<h1>unmask playground <span style='font-weight:400;color:#666'>{html.escape(s.model_name)}</span></h1>\n"
        "<form id='form'>"
        f"<label>prompt<input id='prompt' value='{html.escape(_example(served), quote=True)}'></label>"
        f"<label>planner<select id='preset'>{options}</select></label>"
        f"<label>planner spec<input id='spec' value='{html.escape(s.planner, quote=True)}'></label>"
        f"<label>max_tokens<input id='max_tokens' class='num' type='number' min='1' value='{s.max_tokens}'></label>"
        "<label>block_length<input id='block_length' class='num' type='number' min='1' placeholder='auto'></label>"
        "<label>temperature<input id='temperature' class='num' type='number' min='0' step='0.1' value='0'></label>"
        f"<label>n<input id='n' class='num' type='number' min='1' max='{s.max_batch}' value='1'></label>"
        "<label>seed<input id='seed' class='num' type='number' min='0' placeholder='random'></label>"
        + ("<label>API key<input id='api_key' class='num' type='password'></label>" if s.api_key is not None else "")
        +         "<button id='go' type='submit'>generate</button></form>\n"
        "<div id='status'></div>\n"
        "<div class='controls'><button id='first'>|&lt;</button><button id='back'>&lt;</button>"
        "<button id='play'>play</button><button id='fwd'>&gt;</button><button id='last'>&gt;|</button>"
        "<input type='range' id='slider' min='0' value='0'><span id='label'></span></div>\n"
        "<div id='rows'></div>\n"
        f"<script>\nconst CONFIG = {config};\n{_PLAYGROUND_JS}</script>\n</body>\n</html>\n"
    )
