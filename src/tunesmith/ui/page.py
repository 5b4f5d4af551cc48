"""The page `tunesmith ui` serves: one HTML file with its style and script inline, so it works offline.

The live loss curve is an SVG polyline the script redraws on each step; the finished run's report has the
full charts (run_report.py).
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunesmith</title>
<meta name="viewport" content="width=device-width">
<style>
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans","PingFang SC","Microsoft YaHei",sans-serif;
margin:1.5em auto;max-width:72em;padding:0 1em;color:#222}
h1{font-size:1.5em;margin:0 0 .5em}h2{font-size:1.15em;margin:1.4em 0 .5em}
form{display:grid;grid-template-columns:repeat(auto-fill,minmax(15em,1fr));gap:.6em 1em;align-items:end}
label{display:flex;flex-direction:column;font-size:.85em;color:#555;gap:.2em}
input,select,button{font:inherit;padding:.35em .5em}button{cursor:pointer}
#error{color:#b00020;min-height:1.2em}#status{font-weight:600}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #e3e3e3;padding:.35em .5em;text-align:left}
#curve{border:1px solid #e3e3e3;background:#fafafa}.muted{color:#777}#answers p{overflow-wrap:anywhere}
</style></head><body>
<h1>tunesmith</h1>
<h2>Start a run</h2>
<form id="start">
 <label>name<input name="name" required pattern="[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}" placeholder="my-run"></label>
 <label>data file (path on this machine)<input name="train" required placeholder="data/train.csv"></label>
 <label>text column<input name="text_column" placeholder="text"></label>
 <label>label column<input name="label_column" placeholder="label"></label>
 <label>task<select name="task" id="task"></select></label>
 <label>model<input name="model" list="models" value="multilingual-e5-small"><datalist id="models"></datalist></label>
 <label>method<select name="method" id="method"></select></label>
 <label>epochs (empty: auto)<input name="epochs" type="number" step="any" min="0"></label>
 <label>learning rate (empty: auto)<input name="lr" type="number" step="any" min="0"></label>
 <label>batch size (empty: auto)<input name="batch_size" type="number" min="1"></label>
 <button type="submit" id="go">Start</button>
</form>
<p id="error"></p>
<h2>Watch</h2>
<p><span id="status" class="muted">no run yet</span> <button id="stop" hidden>Stop</button></p>
<p id="progress" class="muted"></p>
<svg id="curve" width="640" height="200" viewBox="0 0 640 200" role="img" aria-label="training loss">
 <polyline id="loss" fill="none" stroke="#4878a8" stroke-width="1.5" points=""></polyline>
 <text id="lossmax" x="4" y="12" font-size="10" fill="#777"></text><text id="lossmin" x="4" y="196" font-size="10"
 fill="#777"></text></svg>
<ul id="evals"></ul>
<h2>Try a finished run</h2>
<form id="try"><label>run<select name="run" id="tryrun"></select></label>
 <label>text or message<input name="text" id="trytext" required maxlength="20000"></label>
 <button type="submit" id="send">Send</button> <button type="button" id="reset">New conversation</button></form>
<div id="answers"></div>
<h2>Runs</h2>
<table><thead><tr><th>name</th><th>task</th><th>state</th><th>score</th><th>report</th></tr></thead>
<tbody id="runs"></tbody></table>
<script>
const $ = (id) => document.getElementById(id);
let source = null, current = null, losses = [];
function text(node, value) { node.textContent = value; return node; }
function option(select, value) { const o = document.createElement("option"); o.value = value; o.textContent = value;
  select.appendChild(o); }
async function choices() {
  const c = await (await fetch("/api/choices")).json();
  c.tasks.forEach((t) => option($("task"), t)); c.methods.forEach((m) => option($("method"), m));
  c.models.forEach((m) => { const o = document.createElement("option"); o.value = m; $("models").appendChild(o); });
}
async function listRuns() {
  const body = $("runs"); body.replaceChildren();
  const runs = (await (await fetch("/api/runs")).json()).runs;
  for (const r of runs) {
    const row = document.createElement("tr"); row.dataset.run = r.name;
    for (const v of [r.name, r.task || "", r.state, r.score === undefined ? "" : `${r.metric} ${r.score.toFixed(4)}`])
      row.appendChild(text(document.createElement("td"), v));
    const cell = document.createElement("td");
    if (r.report) { const a = document.createElement("a"); a.href = `/runs/${encodeURIComponent(r.name)}/report`;
      a.target = "_blank"; a.textContent = "report"; cell.appendChild(a); }
    row.appendChild(cell); body.appendChild(row);
  }
  const chosen = $("tryrun").value; $("tryrun").replaceChildren();
  runs.filter((r) => r.state === "finished").forEach((r) => option($("tryrun"), r.name));
  if (chosen) $("tryrun").value = chosen;
}
let history = [];
function said(who, words) { const p = document.createElement("p"); const b = document.createElement("b");
  p.appendChild(text(b, `${who}: `)); p.appendChild(document.createTextNode(words)); $("answers").appendChild(p); }
function drawLoss() {
  if (!losses.length) return;
  const hi = Math.max(...losses), lo = Math.min(...losses), span = hi - lo || 1, n = Math.max(losses.length - 1, 1);
  $("loss").setAttribute("points", losses.map((v, i) => `${(i / n) * 630 + 5},${190 - ((v - lo) / span) * 175}`)
    .join(" "));
  text($("lossmax"), `loss ${hi.toFixed(3)}`); text($("lossmin"), lo.toFixed(3));
}
function watch(name) {
  if (source) source.close();
  current = name; losses = []; $("evals").replaceChildren(); text($("progress"), "");
  source = new EventSource(`/api/runs/${encodeURIComponent(name)}/events`);
  source.addEventListener("train", (e) => { const r = JSON.parse(e.data); losses.push(r.loss); drawLoss();
    text($("progress"), `step ${r.step} · epoch ${r.epoch} · loss ${r.loss.toFixed(4)} · lr ${r.lr.toExponential(2)}`
      + ` · ${r.examples_per_s} examples/s`); });
  source.addEventListener("eval", (e) => { const r = JSON.parse(e.data);
    const shown = Object.entries(r).filter(([k, v]) => typeof v === "number" && !["step", "seconds", "time", "n"]
      .includes(k)).slice(0, 4).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(" · ");
    const line = `step ${r.step}: ${shown}${r.best ? " (best)" : ""}`;
    $("evals").appendChild(text(document.createElement("li"), line)); });
  source.addEventListener("status", (e) => show(JSON.parse(e.data)));
  source.addEventListener("end", (e) => { source.close(); source = null; show(JSON.parse(e.data)); listRuns(); });
}
function show(s) {
  let line = `${s.name}: ${s.state}`;
  if (s.score !== undefined) line += ` · test ${s.metric} ${s.score.toFixed(4)}`;
  if (s.error) line += ` · ${s.error}`;
  text($("status"), line);
  $("stop").hidden = s.state !== "running";
}
$("start").addEventListener("submit", async (e) => {
  e.preventDefault(); text($("error"), "");
  const body = {};
  for (const [k, v] of new FormData(e.target).entries()) if (v !== "") body[k] = ["epochs", "lr"].includes(k) ?
    Number(v) : k === "batch_size" ? parseInt(v, 10) : v;
  const answer = await fetch("/api/runs", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body)});
  const data = await answer.json();
  if (!answer.ok) { text($("error"), typeof data.error === "string" ? data.error : JSON.stringify(data.error));
    return; }
  show(data); watch(data.name); listRuns();
});
$("stop").addEventListener("click", async () => { if (current) show(await (await fetch(
  `/api/runs/${encodeURIComponent(current)}/stop`, {method: "POST"})).json()); });
$("try").addEventListener("submit", async (e) => {
  e.preventDefault(); const run = $("tryrun").value, words = $("trytext").value;
  if (!run) return;
  const answer = await fetch(`/api/runs/${encodeURIComponent(run)}/try`, {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({text: words, history})});
  const data = await answer.json();
  if (!answer.ok) { said("error", data.error); return; }
  said("you", words); $("trytext").value = "";
  if (data.kind === "chat") { said(run, data.answer); history.push({role: "user", content: words},
    {role: "assistant", content: data.answer}); }
  else { const p = data.prediction; said(run, p.label !== undefined ? `${p.label} (${p.score.toFixed(3)})` :
    p.labels !== undefined ? p.labels.join(", ") || "(no label)" : String(p.value)); }
});
$("reset").addEventListener("click", () => { history = []; $("answers").replaceChildren(); });
$("tryrun").addEventListener("change", () => { history = []; $("answers").replaceChildren(); });
choices(); listRuns();
</script></body></html>
"""
