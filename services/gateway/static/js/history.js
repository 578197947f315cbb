// The reply pane's handoff history (docs/contracts.md, "Handoff history and loops"): every
// handoff of the conversation, oldest first, from the conversation's fetch (`handoffs`):
// "3rd handoff today — returned to AI 12:04, handed off again 12:09: 'still no refund'",
// then one line per handoff (why, first reply and wait, how it ended and by whom).

import { h } from "./dom.js";
import { formatMessageTime, formatOldestWaiting } from "./format.js";

const ENDED = { closed: "closed", returned_to_ai: "returned to AI" };

function ordinal(n) {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th");
  return `${n}${suffix}`;
}

function sameDay(a, b) {
  return new Date(a).toDateString() === new Date(b).toDateString();
}

function quoted(reason) {
  return reason ? `: '${reason}'` : "";
}

/** The headline: which handoff this is, and how the one before it ended. */
export function historyHeadline(handoffs, now = Date.now()) {
  const n = handoffs.length;
  const current = handoffs[n - 1];
  const today = handoffs.every((x) => sameDay(Date.parse(x.requested_at), now));
  let text = `${ordinal(n)} handoff${today ? " today" : ""}`;
  const previous = handoffs[n - 2];
  if (previous && previous.ended_at && ENDED[previous.status]) {
    text += ` — ${ENDED[previous.status]} ${formatMessageTime(previous.ended_at, now)}, handed off again `
      + `${formatMessageTime(current.requested_at, now)}${quoted(current.reason)}`;
  }
  return text;
}

function line(item, index, now, timezone) {
  const parts = [`${index === 0 ? "Handed off" : "Handed off again"} ${formatMessageTime(item.requested_at, now)}${quoted(item.reason)}`];
  if (item.first_reply_at && item.waited_s !== null && item.waited_s !== undefined) {
    const waited = item.waited_s < 60 ? "within a minute" : `after ${formatOldestWaiting(0, item.waited_s * 1000)}`;
    parts.push(`first reply ${formatMessageTime(item.first_reply_at, now)} ${waited}`);
  } else {
    parts.push(item.status === "open" ? "no reply yet" : "no reply");
  }
  if (item.ended_at && ENDED[item.status]) {
    parts.push(`${ENDED[item.status]} ${formatMessageTime(item.ended_at, now)}${item.ended_by ? ` by ${item.ended_by}` : ""}`);
  }
  const li = h("li", { class: "handoff-history-item", text: parts.join(" · ") });
  if (timezone) li.title = `Times in your zone; the chatbot's is ${timezone}.`;
  return li;
}

/** The history section, or null for a conversation handed off once (nothing to tell). */
export function handoffHistory(handoffs, timezone, now = Date.now()) {
  if (!handoffs || handoffs.length < 2) return null;
  const current = handoffs[handoffs.length - 1];
  return h("details", { class: "handoff-history", "aria-label": "Handoff history", open: current.loop > 0 },
    h("summary", { class: "handoff-history-headline" }, historyHeadline(handoffs, now),
      current.loop > 0 ? h("span", { class: "row-loop", text: `loop ×${current.loop}` }) : null),
    h("ol", { class: "handoff-history-list" }, handoffs.map((item, i) => line(item, i, now, timezone))));
}
