// The Summary banner of the reply pane: the AI's recap of the handoff, how many messages came
// since it was written ("3 new messages since this summary", counted live from the
// transcript), and "Refresh" while the conversation waits for the team. A refresh in flight
// (asked here, or anywhere: the summarizer marks it on every dashboard) shows as such; a failed
// one keeps the summary with a quiet note.

import { api, newCommandId } from "./api.js";
import { h } from "./dom.js";
import { formatMessageTime } from "./format.js";

// Who writes what a summary keeps up with (the AI's lines after a handoff are its notices).
const COUNTED = new Set(["visitor", "agent"]);

/** The visitor's and the agents' messages after the last one the summary covers. */
export function newSince(summary, messages) {
  if (!summary || !summary.covers_until) return 0;
  const until = Date.parse(summary.covers_until);
  return messages.filter((m) => COUNTED.has(m.sender) && Date.parse(m.created_at) > until).length;
}

/** Of several copies of one handoff's summary (a live update, a fetch), the newest: the
 * highest revision, written over pending; the first of equals. */
export function newestSummary(summaries) {
  const rank = (s) => 2 * (s.revision || 0) + (s.status !== "pending" ? 1 : 0);
  return summaries.reduce((best, s) => (!best || rank(s) > rank(best) ? s : best), null);
}

/** The agent's Refresh of one pane: the request in flight, and why it was refused (a 429 or
 * 409 in words), until the pane opens another conversation. */
export class SummaryRefresh {
  constructor(rerender) {
    this.rerender = rerender;
    this.reset(null);
  }

  reset(cid) {
    this.cid = cid;
    this.sending = false;
    this.error = null;
  }

  async run(chatbotId, cid) {
    if (this.sending) return;
    this.reset(cid);
    this.sending = true;
    this.rerender();
    try {
      await api.command(chatbotId, cid, "refresh-summary", { command_id: newCommandId() });
    } catch (err) {
      if (this.cid === cid) this.error = err.message;
    }
    if (this.cid !== cid) return;
    this.sending = false;
    this.rerender();
  }
}

/** The banner, or null while there is no summary to show. */
export function summaryBanner(c, messages, refresh, { chatbotId, timezone }) {
  const s = c.summary;
  if (!s || s.status !== "ready" || !s.text) return null;
  const running = s.refresh === "running" || (refresh.sending && refresh.cid === c.conversation_id);
  const n = newSince(s, messages);
  const button = c.status === "handed_off"
    ? h("button", { type: "button", class: "btn btn-small btn-link summary-refresh", "data-action": "refresh-summary",
      disabled: running, onclick: () => refresh.run(chatbotId, c.conversation_id) }, "Refresh")
    : null;
  const error = refresh.cid === c.conversation_id ? refresh.error : null;
  return h("section", { class: "summary", "aria-label": "Summary" },
    h("div", { class: "summary-head" }, h("h3", { class: "summary-title", text: "Summary" }), button),
    h("p", { class: "summary-text", text: s.text }),
    n ? h("p", { class: "summary-new", text: `${n} new ${n === 1 ? "message" : "messages"} since this summary` }) : null,
    running ? h("p", { class: "summary-refreshing", role: "status", text: "Refreshing summary…" }) : null,
    !running && s.refresh === "failed"
      ? h("p", { class: "summary-failed", role: "note",
        text: `Couldn't refresh the summary; showing the one from ${s.made_at ? formatMessageTime(s.made_at, Date.now(), timezone) : "before"}` })
      : null,
    !running && error ? h("p", { class: "summary-failed", role: "note", text: error }) : null);
}
