// The wait clock on an open handoff's row (docs/contracts.md, "The wait clock"): "waiting
// 12m" since the handoff, the reopen or the visitor's first message after an agent's reply;
// "replied 3m ago" while in conversation; the visitor's messages since the clock started
// ("3 new messages · wrote again 2m ago"); and the loop flag ("loop ×3"). Everything ticks
// from the row's timestamps: no polling.

import { h } from "./dom.js";
import { AGENT_ZONE, formatRowWaiting } from "./format.js";

// As the queue's services/queue/waitclock.py: replied rows after every waiting one.
const REPLIED_AFTER_MS = 2 ** 50;

/** The list's order, the queue's: waiting rows by the clock's start (oldest first), then
 * replied rows by their last agent reply. */
export function orderScore(row) {
  if (row.wait_state !== "replied") return waitStart(row);
  return REPLIED_AFTER_MS + Date.parse(row.last_agent_reply_at || row.waiting_since);
}

/** The instant (ms) the row's current wait started: the clock's start (`waiting_since` for a
 * row from before the clock); NaN while the row is answered ("replied"), which is no wait.
 * The one place for it: the list's order and the SLA colours (sla.js) read it. */
export function waitStart(row) {
  if (row.wait_state === "replied") return NaN;
  return Date.parse(row.wait_started_at || row.waiting_since);
}

function ago(at, now) {
  const text = formatRowWaiting(at, now, AGENT_ZONE);
  return text === "just now" ? text : /\d[mh]$/.test(text) ? `${text} ago` : `on ${text}`;
}

/** The row's clock: waiting, the time in the seed's row format (just now, 15m, 2h, a date)
 * in `.row-waiting` (shown as "waiting 12m": the word is the stylesheet's, so the element
 * keeps the seed's text); replied, "replied 3m ago" in its place. */
export function rowClock(row, now) {
  if (row.wait_state === "replied") {
    return h("time", { class: "row-clock row-replied", datetime: row.last_agent_reply_at,
      dataset: { at: row.last_agent_reply_at, clock: "replied" }, text: `replied ${ago(row.last_agent_reply_at, now)}` });
  }
  const since = row.wait_started_at || row.waiting_since;  // waitStart's, as the row's text
  return h("time", { class: "row-clock row-waiting", datetime: since, dataset: { since, clock: "waiting" },
    "aria-label": `waiting ${formatRowWaiting(since, now, AGENT_ZONE)}`, text: formatRowWaiting(since, now, AGENT_ZONE) });
}

/** "3 new messages · wrote again 2m ago" while the visitor waits and wrote since the clock
 * started; the loop flag when this handoff closes one. */
export function rowFlags(row, now) {
  const nudges = row.wait_state !== "replied" && row.nudges > 0 && row.last_visitor_at
    ? h("span", { class: "row-nudges" }, `${row.nudges} new ${row.nudges === 1 ? "message" : "messages"} · `,
      h("time", { class: "row-wrote", datetime: row.last_visitor_at, dataset: { at: row.last_visitor_at },
        text: `wrote again ${ago(row.last_visitor_at, now)}` }))
    : null;
  const loop = row.loop > 0
    ? h("span", { class: "row-loop", title: `Handed off ${row.loop} times in a short while: the bot's handoff conditions may need a look.`,
      text: `loop ×${row.loop}` })
    : null;
  return nudges || loop ? h("div", { class: "row-flags" }, nudges, loop) : null;
}

/** Move the relative times of rendered rows on (the list's tick). */
export function tickClocks(root, now) {
  for (const el of root.querySelectorAll(".row-waiting[data-clock]")) el.setAttribute("aria-label", `waiting ${el.textContent}`);
  for (const el of root.querySelectorAll(".row-replied")) el.textContent = `replied ${ago(el.dataset.at, now)}`;
  for (const el of root.querySelectorAll(".row-wrote")) el.textContent = `wrote again ${ago(el.dataset.at, now)}`;
}
