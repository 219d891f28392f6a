// The live board: every 3 s the table of shipments in transit is rebuilt from board.json.
// Without JavaScript the page is the same table, as rendered; its "Reload" link refreshes it.
// A row here must match templates/logistics/_board_row.html.
"use strict";

(() => {
  const table = document.getElementById("board");
  if (!table) return;
  const EVERY_MS = 3000;
  const body = table.tBodies[0];
  const updated = document.getElementById("board-updated");
  const empty = document.getElementById("board-empty");
  const more = document.getElementById("board-more");
  let shown = null;

  const element = (tag, attributes, ...children) => {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    node.append(...children);
    return node;
  };

  const row = (s) =>
    element(
      "tr",
      { "data-shipment": s.id },
      element(
        "th",
        { scope: "row" },
        element("a", { href: s.url }, s.reference),
        ...(s.recalled ? [" ", element("span", { class: "recalled" }, s.recalled_text)] : []),
      ),
      element("td", {}, s.route),
      element("td", {}, s.carrier),
      element("td", { class: s.temperature_out ? "temperature out" : "temperature" }, s.temperature_text),
      element(
        "td",
        { class: s.stale ? "age stale" : "age" },
        s.last_reading_at ? element("time", { datetime: s.last_reading_at }, s.age_text) : s.age_text,
      ),
      element("td", {}, element("span", { class: `state state-${s.state}` }, s.state_text)),
      element(
        "td",
        { class: "alerts" },
        s.alerts
          ? element(
              "a",
              { href: s.alerts_url },
              `${s.alerts_text} `,
              element("span", { class: `severity severity-${s.severity}` }, s.severity_text),
            )
          : s.alerts_text,
      ),
    );

  const refresh = async () => {
    try {
      const response = await fetch(table.dataset.source, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
      // Signed out meanwhile, the request ends on the login page: HTML, not the board.
      if (!response.ok || !(response.headers.get("Content-Type") || "").startsWith("application/json")) {
        throw new Error(`board.json answered ${response.status}`);
      }
      const board = await response.json();
      const rows = JSON.stringify(board.shipments);
      if (rows !== shown) {
        body.replaceChildren(...board.shipments.map(row));
        empty.hidden = board.shipments.length > 0;
        more.hidden = !board.more;
        shown = rows;
      }
      updated.textContent = board.updated_text;
      updated.classList.remove("error");
    } catch {
      updated.textContent = table.dataset.offline;
      updated.classList.add("error");
    }
  };

  const poll = async () => {
    if (!document.hidden) await refresh();
    setTimeout(poll, EVERY_MS);
  };
  setTimeout(poll, EVERY_MS);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
})();
