// The Conversations tab: every conversation of the chatbot, status filter, search, paging.

import { api } from "./api.js";
import { h, clear } from "./dom.js";
import { channelLabel, formatMessageTime } from "./format.js";
import { STATUS_LABELS } from "./pane.js";

// 50 a page; a deployment (or a test) may set window.HANDOFF_PAGE_SIZE to page differently.
export function pageSize() {
  const n = Number(window.HANDOFF_PAGE_SIZE);
  return Number.isInteger(n) && n > 0 && n <= 200 ? n : 50;
}

export const FILTERS = [["all", "All"], ["needs_reply", "Needs Reply"], ["active", "Active"], ["closed", "Closed"]];
const STATUS_OF_FILTER = { needs_reply: "handed_off", active: "active", closed: "closed" };

export class ConversationsView {
  constructor(root, { chatbotId, status, q, onSelect, onFilter }) {
    this.root = root;
    this.chatbotId = chatbotId;
    this.status = FILTERS.some(([k]) => k === status) ? status : "all";
    this.q = q || "";
    this.onSelect = onSelect;
    this.onFilter = onFilter; // (status, q) -> updates the URL
    this.items = [];
    this.cursor = null;
    this.selected = null;
    this.loadSeq = 0;
    clear(root);
    const filterBar = h("div", { class: "filters", role: "group", "aria-label": "Status filter" },
      FILTERS.map(([key, label]) => h("button", {
        type: "button", class: "filter", "data-status": key, "aria-pressed": key === this.status ? "true" : "false",
        onclick: () => this.onFilter(key, this.q),
      }, label)));
    this.search = h("input", { type: "search", class: "search", placeholder: "Search name, e-mail, phone or message",
      "aria-label": "Search conversations", value: this.q });
    let timer = null;
    this.search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.onFilter(this.status, this.search.value.trim()), 300);
    });
    this.errorEl = h("div", { class: "error", role: "alert", hidden: true });
    this.tbody = h("tbody");
    this.emptyEl = h("p", { class: "empty-state table-empty", hidden: true, text: "No conversations match." });
    this.moreEl = h("button", { type: "button", class: "btn load-more", hidden: true, onclick: () => this.load(true) }, "Load more");
    this.paneEl = h("section", { class: "pane", "aria-label": "Reply pane" });
    root.append(
      h("div", { class: "toolbar" }, filterBar, this.search),
      this.errorEl,
      h("div", { class: "workspace" },
        h("div", { class: "table-panel" },
          h("table", { class: "conversations", "aria-label": "Conversations" },
            h("thead", {}, h("tr", {},
              ["Visitor", "Status", "Channel", "Last message", "Messages", "Updated"].map((t) => h("th", { scope: "col", text: t })))),
            this.tbody),
          this.emptyEl, this.moreEl),
        this.paneEl));
    this.load(false);
  }

  /** A new filter or search from the URL: reload in place (the search box keeps focus). */
  setFilter(status, q) {
    status = FILTERS.some(([k]) => k === status) ? status : "all";
    if (status === this.status && q === this.q) return;
    this.status = status;
    this.q = q;
    for (const b of this.root.querySelectorAll(".filter")) b.setAttribute("aria-pressed", b.dataset.status === status ? "true" : "false");
    if (this.search.value.trim() !== q) this.search.value = q;
    this.cursor = null;
    this.load(false);
  }

  async load(more) {
    const mine = ++this.loadSeq;
    try {
      const { data } = await api.conversations(this.chatbotId, {
        status: this.status, q: this.q, cursor: more ? this.cursor : null, limit: pageSize(),
      });
      if (mine !== this.loadSeq) return;
      const seen = new Set(this.items.map((c) => c.conversation_id));
      this.items = more ? this.items.concat(data.items.filter((c) => !seen.has(c.conversation_id))) : data.items;
      this.cursor = data.next_cursor || null;
      this.errorEl.hidden = true;
      this.render();
    } catch (err) {
      this.errorEl.textContent = err.message;
      this.errorEl.hidden = false;
    }
  }

  /** A conversation changed (live update or command result): refresh its row in place; a
   * new one that fits the filter goes on top (most recent activity first). Rows that stop
   * fitting stay until the next load, so nothing moves from under the agent's pointer. */
  applyConversation(c) {
    const i = this.items.findIndex((x) => x.conversation_id === c.conversation_id);
    if (i >= 0) this.items[i] = { ...this.items[i], ...c };
    else if (!this.q && this.matches(c)) this.items.unshift(c);
    else return;
    this.render();
  }

  select(cid) {
    this.selected = cid;
    for (const tr of this.tbody.children) {
      const on = tr.dataset.cid === cid;
      tr.classList.toggle("selected", on);
      tr.setAttribute("aria-selected", on ? "true" : "false");
    }
  }

  render() {
    clear(this.tbody);
    const now = Date.now();
    for (const c of this.items) {
      const open = () => this.onSelect(c.conversation_id);
      const tr = h("tr", {
        class: "conv-row" + (c.conversation_id === this.selected ? " selected" : ""), tabindex: "0",
        "aria-selected": c.conversation_id === this.selected ? "true" : "false",
        dataset: { cid: c.conversation_id }, onclick: open,
        onkeydown: (e) => {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); }
          else if (e.key === "ArrowDown" && tr.nextElementSibling) { e.preventDefault(); tr.nextElementSibling.focus(); }
          else if (e.key === "ArrowUp" && tr.previousElementSibling) { e.preventDefault(); tr.previousElementSibling.focus(); }
        },
      },
        // Long names and previews are cut to fit the table: the whole text on hover.
        h("td", { class: "cell-name", text: c.display_name, title: c.display_name }),
        h("td", {}, h("span", { class: `badge badge-${c.status}`, text: STATUS_LABELS[c.status] || c.status }),
          // The visitor wrote after the close (it stays closed until someone reopens it).
          c.status === "closed" && c.new_after_close ? h("span", { class: "after-close-tag", text: "New message after close" }) : null),
        h("td", { class: "cell-channel", text: channelLabel(c.channel) }),
        h("td", { class: "cell-preview", text: c.last_message_preview || "", title: c.last_message_preview || "" }),
        h("td", { class: "cell-num", text: String(c.message_count) }),
        h("td", { class: "cell-time" }, c.last_message_at
          ? h("time", { datetime: c.last_message_at, text: formatMessageTime(c.last_message_at, now) }) : null));
      this.tbody.append(tr);
    }
    this.emptyEl.hidden = this.items.length > 0;
    this.moreEl.hidden = !this.cursor;
  }

  /** Whether a conversation with this status belongs in the current filter. */
  matches(c) {
    return this.status === "all" || STATUS_OF_FILTER[this.status] === c.status;
  }
}
