// WhatsApp's 24-hour reply window in the Handoff list and the reply pane: the row's live
// countdown ("window closes in 38m", then "window closed"), the list's rule that lifts rows
// whose window closes soon, and the reply box's word once it has closed. The queue computes
// the window's end (shared/reply_window.py, the definition channels enforces on delivery);
// the page only counts down to it with its own timers, no polling.
//
// The list's rule (docs/contracts.md, "WhatsApp's 24-hour window"): the row first in the list's
// own order (the one waiting longest) stays first; right after it come the rows whose window
// closes within the warning period (REPLY_WINDOW_WARNING_MIN, default 60 min), soonest first;
// then every other row in the list's order. Nothing is hidden and the oldest is never pushed
// down; a row whose window has closed is not lifted (only a template message reaches it).

import { replyWindowWarningMs } from "./api.js";
import { h } from "./dom.js";
import { formatMinutes } from "./format.js";

const MINUTE = 60_000;

export const WINDOW_CLOSED = "window closed";
export const TEMPLATE_ONLY = "WhatsApp's reply window has closed: only a template message can reach this "
  + "visitor until they write again. A reply typed here is not sent.";

/** The window's end in ms, or null (not WhatsApp, or no end known). */
export function windowEnd(item) {
  if (!item || item.channel !== "whatsapp" || !item.reply_window_ends_at) return null;
  const ms = Date.parse(item.reply_window_ends_at);
  return Number.isNaN(ms) ? null : ms;
}

/** "none" (no window), "open", "soon" (closes within the warning period) or "closed". */
export function windowState(item, now, warningMs = replyWindowWarningMs()) {
  const ends = windowEnd(item);
  if (ends === null) return "none";
  if (ends <= now) return "closed";
  return ends - now <= warningMs ? "soon" : "open";
}

/** "window closes in 38m" / "in 1h 5m" / "in less than a minute" (whole minutes, down). */
export function countdownText(ends, now) {
  const minutes = Math.floor((ends - now) / MINUTE);
  return minutes < 1 ? "window closes in less than a minute" : `window closes in ${formatMinutes(minutes)}`;
}

/** The rows in the order the list shows them (the rule above); `rows` is not changed. */
export function windowOrder(rows, now, warningMs = replyWindowWarningMs()) {
  if (rows.length < 3) return rows.slice();
  const [first, ...rest] = rows;
  const soon = rest.filter((r) => windowState(r, now, warningMs) === "soon")
    .sort((a, b) => windowEnd(a) - windowEnd(b));
  if (!soon.length) return rows.slice();
  const lifted = new Set(soon);
  return [first, ...soon, ...rest.filter((r) => !lifted.has(r))];
}

function badgeText(state, ends, now) {
  return state === "closed" ? WINDOW_CLOSED : countdownText(ends, now);
}

const BADGE_TITLES = {
  soon: "WhatsApp's 24-hour reply window closes soon: listed right after the longest-waiting handoff.",
  closed: "WhatsApp's 24-hour reply window has closed: only a template message can reach the visitor.",
};

/** The row's window badge (only when it closes soon or has closed), or null. */
export function windowBadge(row, now) {
  const state = windowState(row, now);
  if (state !== "soon" && state !== "closed") return null;
  const ends = windowEnd(row);
  return h("span", { class: `row-window row-window--${state}`, title: BADGE_TITLES[state],
    dataset: { ends: String(ends) }, text: badgeText(state, ends, now) });
}

/** The legend under the list while a row is lifted: the rule, in words. */
export function windowLegend(rows, now) {
  if (!rows.some((r) => windowState(r, now) === "soon")) return null;
  const minutes = Math.round(replyWindowWarningMs() / MINUTE);
  return h("p", { class: "list-legend", role: "note",
    text: `WhatsApp chats whose reply window closes within ${minutes} minutes are listed right after the longest-waiting one.` });
}

/** Puts the legend just above the list while it applies; takes it away otherwise. */
export function showLegend(listEl, rows, now) {
  const old = listEl.parentElement && listEl.parentElement.querySelector(":scope > .list-legend");
  if (old) old.remove();
  const legend = windowLegend(rows, now);
  if (legend) listEl.before(legend);
}

/** On the list's tick: true when a row's window changed state (the list must be drawn
 * again: badges appear, rows move); otherwise the countdowns are updated in place. */
export function tickWindows(listEl, rows, now) {
  const shown = [...listEl.querySelectorAll(".handoff-row")].map((li) => li.dataset.cid);
  const onScreen = new Set(shown);  // the list may show a part of the rows (a filter)
  const order = windowOrder(rows.filter((r) => onScreen.has(r.conversation_id)), now).map((r) => r.conversation_id);
  if (shown.join("\n") !== order.join("\n")) return true;
  for (const r of rows) {
    if (!onScreen.has(r.conversation_id)) continue;
    const li = listEl.querySelector(`.handoff-row[data-cid="${CSS.escape(r.conversation_id)}"]`);
    const badge = li && li.querySelector(".row-window");
    const state = windowState(r, now);
    const had = badge ? (badge.classList.contains("row-window--closed") ? "closed" : "soon") : null;
    if ((state === "soon" || state === "closed" ? state : null) !== had) return true;
    if (badge) badge.textContent = badgeText(state, windowEnd(r), now);
  }
  return false;
}

/** Calls `fn` once when the conversation's window closes (the pane redraws itself then);
 * the timer it returns is cleared by the caller on its next render. */
export function atWindowClose(conversation, fn) {
  const ends = windowEnd(conversation);
  if (ends === null || ends <= Date.now()) return null;
  return setTimeout(fn, Math.min(ends - Date.now() + 50, 2 ** 31 - 1));
}

/** The reply box's word when the window has closed, or null. */
export function templateOnlyNote(conversation) {
  if (!conversation || conversation.channel !== "whatsapp") return null;
  const ends = windowEnd(conversation);
  if (ends !== null && ends > Date.now()) return null;
  return h("p", { class: "reply-template-only", id: "reply-template-only", role: "note", text: TEMPLATE_ONLY });
}
