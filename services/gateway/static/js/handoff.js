// The Handoff tab: four stats, the open handoffs oldest first, and the reply pane.

import { h, clear } from "./dom.js";
import { AGENT_ZONE, channelLabel, formatOldestWaiting, formatRowWaiting } from "./format.js";
import { orderScore, rowClock, rowFlags, tickClocks } from "./waitclock.js";
import { SlaPainter } from "./sla.js";
import { filterControl, filteredEmpty, filterRows, rowAssignee } from "./claim.js";
import { presence } from "./presence.js";
import { showLegend, tickWindows, windowBadge, windowOrder } from "./window.js";

export function sortRows(rows) {
  // The queue's order: by the wait clock (waitclock.js).
  return rows.sort((a, b) => orderScore(a) - orderScore(b)
    || (a.conversation_id < b.conversation_id ? -1 : 1));
}

export class HandoffView {
  constructor(root, { store, chatbotId, onSelect, onLoadMore }) {
    this.root = root;
    this.store = store; // the chatbot's live state: stats, rows, nextCursor
    this.chatbotId = chatbotId;
    this.onSelect = onSelect;
    this.onLoadMore = onLoadMore;
    this.selected = null;
    clear(root);
    this.statsEl = h("section", { class: "stats", "aria-label": "Handoff stats" });
    this.countEl = h("span", { class: "list-count" });
    this.listEl = h("ul", { class: "handoff-list", role: "listbox", "aria-label": "Open handoffs, oldest first" });
    this.listEl.addEventListener("keydown", (e) => this.onKey(e));
    this.emptyEl = h("div", { class: "empty-state list-empty", hidden: true },
      h("p", { class: "empty-title", text: "No open handoffs" }),
      h("p", { class: "empty-text", text: "When a visitor asks for a human, they'll land here." }));
    this.filteredEl = h("div", { class: "list-filtered", hidden: true });
    this.moreEl = h("button", { type: "button", class: "btn btn-link load-more", hidden: true, onclick: () => this.onLoadMore() }, "Load more");
    this.paneEl = h("section", { class: "pane", "aria-label": "Reply pane" });
    root.append(
      this.statsEl,
      h("div", { class: "workspace" },
        h("aside", { class: "list-panel", "aria-label": "Open handoffs" },
          h("div", { class: "list-header" },
            h("h2", { class: "list-title" }, "Open handoffs ", this.countEl),
            h("a", { class: "all-link", href: `#/${encodeURIComponent(chatbotId)}/conversations?status=needs_reply`,
              "aria-label": "All conversations needing a reply" }, "All →")),
          filterControl(() => this.renderList()), // All / Unassigned / Mine (claim.js)
          this.listEl, this.emptyEl, this.filteredEl, this.moreEl),
        this.paneEl));
    // Wait-time colours (amber / red) on the rows and the Oldest waiting stat.
    this.sla = new SlaPainter({ chatbotId, rows: () => this.store.rows, listEl: this.listEl, statsEl: this.statsEl });
    this.render();
  }

  select(cid) {
    this.selected = cid;
    for (const li of this.listEl.children) {
      const on = li.dataset.cid === cid;
      li.setAttribute("aria-selected", on ? "true" : "false");
      li.classList.toggle("selected", on);
    }
  }

  render() {
    this.renderStats();
    this.renderList();
  }

  renderStats() {
    const s = this.store.stats;
    const now = Date.now();
    const cards = [
      ["open", "Open", s ? String(s.open) : "…"],
      ["oldest", "Oldest waiting", s ? formatOldestWaiting(s.oldest_waiting_since, now) : "…"],
      ["today", "Today", s ? String(s.today) : "…"],
      ["resolved", "Resolved this week", s ? String(s.resolved_this_week) : "…"],
    ];
    clear(this.statsEl);
    for (const [key, label, value] of cards) {
      this.statsEl.append(h("div", { class: "stat", "data-stat": key },
        h("span", { class: "stat-label", text: label }),
        h("span", { class: "stat-value", text: value })));
    }
    this.sla.paint();
  }

  renderList() {
    // WhatsApp rows whose reply window closes soon come right after the oldest shown (window.js).
    const rows = windowOrder(filterRows(this.store.rows), Date.now());
    const focusedCid = document.activeElement && document.activeElement.closest && document.activeElement.closest(".handoff-row")
      ? document.activeElement.closest(".handoff-row").dataset.cid : null;
    clear(this.listEl);
    const now = Date.now();
    rows.forEach((row, index) => {
      const selected = row.conversation_id === this.selected;
      const li = h("li", {
        class: "handoff-row" + (selected ? " selected" : ""), role: "option", id: `row-${row.conversation_id}`,
        "aria-selected": selected ? "true" : "false", tabindex: "-1", dataset: { cid: row.conversation_id },
        onclick: () => this.onSelect(row.conversation_id),
      },
        h("div", { class: "row-top" },
          h("span", { class: "row-name", text: row.display_name }),
          rowClock(row, now)),
        rowFlags(row, now),
        row.reason ? h("div", { class: "row-reason", text: row.reason }) : null,
        h("div", { class: "row-bottom" },
          h("span", { class: `channel channel-${row.channel}`, text: channelLabel(row.channel) }),
          h("span", { class: "row-count", text: `${row.message_count} ${row.message_count === 1 ? "message" : "messages"}` }),
          windowBadge(row, now),
          rowAssignee(row)));
      this.listEl.append(li);
    });
    // Roving tab stop: the selected row (or the first) is the list's one tab stop.
    const stop = this.listEl.querySelector(".selected") || this.listEl.firstElementChild;
    if (stop) stop.tabIndex = 0;
    if (focusedCid) {
      const again = this.listEl.querySelector(`[data-cid="${CSS.escape(focusedCid)}"]`);
      if (again) again.focus();
    }
    this.emptyEl.hidden = this.store.rows.length > 0;
    this.filteredEl.hidden = rows.length > 0 || !this.store.rows.length; // a filter hides them all
    if (!this.filteredEl.hidden) this.filteredEl.replaceChildren(filteredEmpty());
    this.listEl.hidden = rows.length === 0;
    this.countEl.textContent = this.store.stats ? `(${this.store.stats.open})` : "";
    this.moreEl.hidden = !this.store.nextCursor;
    showLegend(this.listEl, rows, now);
    this.sla.paint();
    presence.paintRows(this.listEl, this.chatbotId); // who else is in each conversation
  }

  /** Waiting times tick while the page is open. */
  tick() {
    const now = Date.now();
    if (tickWindows(this.listEl, this.store.rows, now)) this.renderList();
    for (const el of this.listEl.querySelectorAll(".row-waiting")) {
      el.textContent = formatRowWaiting(el.dataset.since, now, AGENT_ZONE);
    }
    tickClocks(this.listEl, now);
    const oldest = this.statsEl.querySelector('[data-stat="oldest"] .stat-value');
    if (oldest && this.store.stats) oldest.textContent = formatOldestWaiting(this.store.stats.oldest_waiting_since, now);
  }

  onKey(event) {
    const items = [...this.listEl.querySelectorAll(".handoff-row")];
    if (!items.length) return;
    const current = items.indexOf(document.activeElement);
    let next = null;
    if (event.key === "ArrowDown") next = Math.min(items.length - 1, current + 1);
    else if (event.key === "ArrowUp") next = Math.max(0, current <= 0 ? 0 : current - 1);
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = items.length - 1;
    else if ((event.key === "Enter" || event.key === " ") && current >= 0) {
      event.preventDefault();
      this.onSelect(items[current].dataset.cid);
      return;
    }
    if (next === null) return;
    event.preventDefault();
    for (const li of items) li.tabIndex = -1;
    items[next].tabIndex = 0;
    items[next].focus();
  }
}
