// The Organizations page: live rows from server-sent events, and the row actions.
// Rows arrive as HTML the server rendered with every field escaped; this script only puts
// them in place and writes its own messages with textContent.
'use strict';
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const rowsBody = document.getElementById('rows');
  const banner = document.getElementById('banner');
  const live = document.getElementById('live');
  const filter = document.getElementById('namespace-filter');
  const empty = document.getElementById('empty');
  const notices = new Map();
  let seq = Number(document.body.dataset.seq || 0);

  function rowFor(key) {
    return document.getElementById('org/' + key);
  }

  function showNotice(key) {
    const row = rowFor(key);
    const n = notices.get(key);
    if (!row || !n) return;
    const p = row.querySelector('.notice');
    p.textContent = n.text;
    p.className = 'notice ' + n.kind;
    p.hidden = false;
  }

  function notice(key, text, kind) {
    notices.set(key, { text: text, kind: kind });
    showNotice(key);
  }

  function applyFilter() {
    if (!filter) return;
    const ns = filter.value;
    let shown = 0;
    for (const row of rowsBody.rows) {
      row.hidden = ns !== '' && row.dataset.namespace !== ns;
      if (!row.hidden) shown++;
    }
    if (empty) empty.hidden = shown > 0;
  }

  function addNamespaceOption(ns) {
    if (!filter) return;
    for (const o of filter.options) if (o.value === ns) return;
    const o = document.createElement('option');
    o.value = ns;
    o.textContent = ns;
    filter.appendChild(o);
  }

  function parseRow(html) {
    const t = document.createElement('template');
    t.innerHTML = html;
    return t.content.firstElementChild;
  }

  function before(a, b) {
    const x = [a.dataset.namespace, a.dataset.name];
    const y = [b.dataset.namespace, b.dataset.name];
    return x[0] < y[0] || (x[0] === y[0] && x[1] < y[1]);
  }

  function putRow(key, html) {
    const row = parseRow(html);
    if (!row) return;
    const old = rowFor(key);
    if (old) {
      const menu = old.querySelector('details.menu');
      if (menu && menu.open) row.querySelector('details.menu').open = true;
      old.replaceWith(row);
    } else if (document.body.dataset.page === 'list') {
      let next = null;
      for (const r of rowsBody.rows) {
        if (before(row, r)) { next = r; break; }
      }
      rowsBody.insertBefore(row, next);
      addNamespaceOption(row.dataset.namespace);
    } else {
      return;
    }
    showNotice(key);
    applyFilter();
  }

  function problem(message) {
    if (!banner) return;
    banner.textContent = message || '';
    banner.hidden = !message;
  }

  async function reload() {
    const res = await fetch('/rows', { credentials: 'same-origin' });
    if (!res.ok) return;
    const body = await res.json();
    seq = body.seq;
    if (document.body.dataset.page === 'list') {
      const t = document.createElement('template');
      t.innerHTML = body.html;
      rowsBody.replaceChildren(t.content);
      for (const r of rowsBody.rows) addNamespaceOption(r.dataset.namespace);
      for (const key of notices.keys()) showNotice(key);
    } else {
      const key = document.body.dataset.key;
      const t = document.createElement('template');
      t.innerHTML = body.html;
      const mine = Array.from(t.content.children).find((r) => r.dataset.key === key);
      if (mine) putRow(key, mine.outerHTML);
    }
    problem(body.problem);
    applyFilter();
  }

  async function check(key) {
    notice(key, 'Asking for a check\u2026', 'pending');
    let res;
    try {
      res = await fetch('/orgs/' + key + '/check', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'X-CSRF-Token': csrf },
      });
    } catch (e) {
      notice(key, 'The dashboard did not answer: is it still running?', 'error');
      return;
    }
    let body = {};
    try { body = await res.json(); } catch (e) { body = {}; }
    if (res.ok) notice(key, body.message || 'Check requested.', 'pending');
    else notice(key, body.error || ('Refused (' + res.status + ')'), 'error');
  }

  document.addEventListener('click', (ev) => {
    const button = ev.target.closest('button[data-action]');
    if (!button) return;
    const row = button.closest('[data-key]');
    if (!row) return;
    const key = row.dataset.key;
    if (button.dataset.action === 'why') notice(key, button.dataset.why, 'info');
    if (button.dataset.action === 'check') check(key);
    const menu = button.closest('details.menu');
    if (menu) menu.open = false;
  });

  if (filter) filter.addEventListener('change', applyFilter);

  const source = new EventSource('/events?since=' + seq);
  source.onopen = () => { live.textContent = 'live'; live.className = 'ok'; };
  source.onerror = () => { live.textContent = 'reconnecting\u2026'; live.className = 'warn'; };
  source.addEventListener('row', (ev) => {
    const d = JSON.parse(ev.data);
    putRow(d.key, d.html);
  });
  source.addEventListener('remove', (ev) => {
    const d = JSON.parse(ev.data);
    const row = rowFor(d.key);
    if (row && document.body.dataset.page === 'list') row.remove();
    applyFilter();
  });
  source.addEventListener('reset', () => { reload(); });
  source.addEventListener('problem', (ev) => problem(JSON.parse(ev.data).message));
  source.addEventListener('checked', (ev) => {
    const d = JSON.parse(ev.data);
    notice(d.key, d.message, d.failed ? 'error' : 'ok');
  });
  applyFilter();
})();
