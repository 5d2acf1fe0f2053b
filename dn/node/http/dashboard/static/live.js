// Keeps the network page live: polls this node's JSON API every few seconds and redraws the
// height, the tip, the peers and the last blocks. Text goes in with textContent, never as HTML.
"use strict";
(function () {
  const EVERY_MS = 2000;
  const ROWS = 10;
  const TURNS = 3; // upcoming in-turn heights per validator
  const live = document.getElementById("live");
  let height = null;

  function short(text, n) { text = String(text || ""); return text.length > n ? text.slice(0, n) + "…" : text; }
  function cell(row, text, cls) {
    const td = row.insertCell();
    if (cls) td.className = cls;
    if (text instanceof Node) td.appendChild(text); else td.textContent = text;
    return td;
  }
  function link(href, text, cls) {
    const a = document.createElement("a");
    a.href = href; a.textContent = text; if (cls) a.className = cls;
    return a;
  }
  function when(ms) { return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC"; }
  function set(id, text) { const el = document.getElementById(id); if (el) el.textContent = text; }
  async function json(url) {
    const answer = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!answer.ok) throw new Error(url + ": " + answer.status);
    return answer.json();
  }

  function drawBlocks(blocks) {
    const body = document.getElementById("blocks");
    if (!body) return;
    body.replaceChildren();
    for (const b of blocks.slice().reverse()) {
      const row = body.insertRow();
      const h = b.header;
      cell(row, link("/block/" + h.height, String(h.height)), "num");
      cell(row, short(b.hash, 12), "mono");
      cell(row, link("/address/" + h.proposer, short(h.proposer, 14), "mono"));
      const kinds = [...new Set((b.txs || []).map((tx) => tx.kind))].sort();
      cell(row, String(b.tx_ids.length) + (kinds.length ? " (" + kinds.join(", ") + ")" : ""));
      cell(row, when(h.time));
      cell(row, String(h.difficulty), "num");
    }
  }

  function drawPeers(peers) {
    const body = document.getElementById("peers");
    if (!body) return;
    body.replaceChildren();
    if (!peers.length) { cell(body.insertRow(), "no peers yet", "note").colSpan = 6; return; }
    for (const p of peers) {
      const row = body.insertRow();
      cell(row, p.url, "mono");
      cell(row, link("/address/" + p.address, short(p.address, 14), "mono"));
      cell(row, (p.roles || []).join(", "));
      cell(row, String(p.height), "num");
      cell(row, String(p.score), "num");
      cell(row, p.seen_ago_s + " s ago", "num");
    }
  }

  function drawTurns(validators, tip) {
    // Clique: the in-turn proposer of height h is validators[h % n] (sorted addresses).
    const n = validators.length;
    for (const row of document.querySelectorAll("#validators tr[data-address]")) {
      const turns = [];
      for (let h = tip + 1; h <= tip + n * TURNS && turns.length < TURNS; h++) {
        if (validators[h % n] === row.dataset.address) turns.push(h);
      }
      const now = turns[0] === tip + 1;
      row.classList.toggle("in-turn", now);
      const parts = [turns.join(", ")];
      if (now) {
        const strong = document.createElement("strong");
        strong.textContent = "in turn now";
        parts.unshift(strong, " · ");
      }
      row.querySelector(".turns").replaceChildren(...parts);
    }
  }

  async function tick() {
    try {
      const status = await json("/dn/v1/status");
      set("final", status.final_height);
      set("tip", short(status.tip, 24));
      set("mempool", status.mempool);
      if (status.height !== height) {
        const from = Math.max(1, status.height - ROWS + 1);
        drawBlocks((await json("/dn/v1/blocks?from=" + from + "&limit=" + ROWS)).blocks);
        set("height", status.height);
        set("foot-height", status.height);
        drawTurns(status.validators, status.height);
        height = status.height;
      }
      if (document.getElementById("peers")) drawPeers((await json("/dn/v1/peers")).peers);
      live.textContent = "live · " + new Date().toLocaleTimeString();
      live.className = "live on";
    } catch (err) {
      live.textContent = "offline · " + err.message;
      live.className = "live off";
    }
  }
  tick();
  setInterval(tick, EVERY_MS);
})();
