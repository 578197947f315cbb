// Wait-time SLA per chatbot (Tools → Human Handoff: "Alert after N min", "Urgent after M min",
// each may be off). Everything is computed in the browser from the row's time: rows and the
// Oldest waiting stat turn amber / red when their wait crosses a threshold (one timer for the
// next crossing, no polling), and an unassigned row crossing the urgent threshold alerts the
// agent again, once (alerts.js makes the sound and the notification; mute applies).

import { api } from "./api.js";
import { waitStart } from "./waitclock.js";

const MINUTE_MS = 60000;
// A crossing found this long after it happened (a sleeping laptop, a throttled background
// tab fires its timers late, up to a minute) is not news any more: no re-alert for it.
const LATE_MS = 3 * MINUTE_MS;
// setTimeout's longest delay; a later crossing is scheduled again from there.
const MAX_DELAY_MS = 2 ** 31 - 1;
// Re-alerts already made in this browser (any tab), by conversation, waiting period and threshold.
const STORE_PREFIX = "handoff.sla.";
const STORE_KEEP_MS = 8 * 24 * 60 * MINUTE_MS;

// What a wait counts from, for the colours and the re-alert alike, is the wait clock's
// `waitStart` (NaN for an answered row: no level, no re-alert until the visitor writes again).

/** Whether an agent has the conversation (the claim's `assignee`; missing or null: nobody). */
export function isAssigned(row) {
  return Boolean(row.assignee);
}

/** A chatbot's thresholds from its Human Handoff settings: minutes, null when off. */
export function thresholdsOf(humanHandoff) {
  const minutes = (v) => (Number.isInteger(v) && v > 0 ? v : null);
  return { alert: minutes(humanHandoff.alert_after_min), urgent: minutes(humanHandoff.urgent_after_min) };
}

/** "urgent", "alert" or null: how far a wait that started at `start` is at `now`. */
export function slaLevel(start, t, now) {
  if (!t || !Number.isFinite(start)) return null;
  const waited = now - start;
  if (t.urgent !== null && waited >= t.urgent * MINUTE_MS) return "urgent";
  if (t.alert !== null && waited >= t.alert * MINUTE_MS) return "alert";
  return null;
}

/** When (ms) a wait that started at `start` next crosses a threshold after `now`; null: never. */
export function nextCrossing(start, t, now) {
  if (!t || !Number.isFinite(start)) return null;
  const ahead = [t.alert, t.urgent].filter((m) => m !== null).map((m) => start + m * MINUTE_MS).filter((at) => at > now);
  return ahead.length ? Math.min(...ahead) : null;
}

/** The words beside the colour (colour is never the only signal): "Over 15 min". */
export function slaWords(level, t) {
  if (level === "urgent") return `Over ${t.urgent} min`;
  if (level === "alert") return `Over ${t.alert} min`;
  return "";
}

const RANK = { alert: 1, urgent: 2 };

/** A timer for the earliest of some instants, replaced on every call. */
class NextTimer {
  constructor(fire) {
    this.fire = fire;
    this.timer = null;
  }

  at(instant) {
    clearTimeout(this.timer);
    this.timer = null;
    if (instant === null) return;
    this.timer = setTimeout(() => { this.timer = null; this.fire(); }, Math.min(MAX_DELAY_MS, Math.max(0, instant - Date.now())));
  }
}

/** Every chatbot's thresholds, loaded once per page and refreshed when its settings change. */
class SlaSettings {
  constructor() {
    this.byChatbot = new Map(); // chatbot id -> thresholds
    this.loading = new Map(); // chatbot id -> promise
    this.listeners = new Set();
  }

  /** The thresholds, or null until loaded (loading them then; listeners hear when). */
  get(chatbotId) {
    if (this.byChatbot.has(chatbotId)) return this.byChatbot.get(chatbotId);
    this.load(chatbotId);
    return null;
  }

  load(chatbotId) {
    if (this.loading.has(chatbotId)) return this.loading.get(chatbotId);
    const loading = api.settings(chatbotId)
      .then(({ data }) => this.set(chatbotId, data.human_handoff))
      .catch((err) => console.warn("wait-time thresholds not loaded", err))
      .finally(() => this.loading.delete(chatbotId));
    this.loading.set(chatbotId, loading);
    return loading;
  }

  /** Saved here (Tools) or loaded: every listener repaints / reschedules. */
  set(chatbotId, humanHandoff) {
    if (!humanHandoff) return;
    this.byChatbot.set(chatbotId, thresholdsOf(humanHandoff));
    for (const fn of [...this.listeners]) fn(chatbotId);
  }

  /** fn(chatbot id) on every change; returns the way to stop listening. */
  listen(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}

export const slaSettings = new SlaSettings();

// The Handoff view on screen has the one painter (a new view's painter ends the last one's timer).
let activePainter = null;

/** Paints the Handoff view's rows and Oldest waiting stat, and repaints at the next crossing. */
export class SlaPainter {
  /** rows() is the list on screen; listEl holds the `.handoff-row`s, statsEl the stats. */
  constructor({ chatbotId, rows, listEl, statsEl }) {
    Object.assign(this, { chatbotId, rows, listEl, statsEl });
    if (activePainter) activePainter.dispose();
    activePainter = this;
    this.timer = new NextTimer(() => this.paint());
    this.stopListening = slaSettings.listen((id) => { if (id === chatbotId) this.paint(); });
  }

  dispose() {
    this.stopListening();
    this.timer.at(null);
  }

  paint() {
    if (!this.listEl.isConnected) { // the view was left
      this.dispose();
      return;
    }
    const t = slaSettings.get(this.chatbotId);
    const now = Date.now();
    const levels = new Map();
    let worst = null;
    let next = null;
    // Every open handoff loaded, shown or not (a filter may hide some): the stat is about all.
    for (const row of this.rows()) {
      const start = waitStart(row);
      const level = slaLevel(start, t, now);
      levels.set(row.conversation_id, level);
      if (level && (!worst || RANK[level] > RANK[worst])) worst = level;
      const at = nextCrossing(start, t, now);
      if (at !== null && (next === null || at < next)) next = at;
    }
    for (const li of this.listEl.querySelectorAll(".handoff-row")) {
      paintLevel(li, levels.get(li.dataset.cid) || null, t, li.querySelector(".row-top"), "row-sla", li.querySelector(".row-top > .row-waiting"));
    }
    // The stat takes the colour of the oldest row, the one that waited longest.
    const stat = this.statsEl.querySelector('[data-stat="oldest"]');
    if (stat) paintLevel(stat, worst, t, stat, "stat-sla");
    this.timer.at(next);
  }
}

/** The colour (a class) and its words (a badge in `holder`, before `before`). */
function paintLevel(el, level, t, holder, badgeClass, before = null) {
  el.classList.toggle("sla-alert", level === "alert");
  el.classList.toggle("sla-urgent", level === "urgent");
  let badge = holder.querySelector(`.${badgeClass}`);
  if (!level) {
    if (badge) badge.remove();
    return;
  }
  if (!badge) {
    badge = document.createElement("span");
    badge.className = `sla-badge ${badgeClass}`;
    holder.insertBefore(badge, before);
  }
  badge.textContent = slaWords(level, t);
  badge.title = level === "urgent" ? `Waiting longer than ${t.urgent} minutes (urgent)` : `Waiting longer than ${t.alert} minutes`;
}

/** Re-alerts: an unassigned open handoff whose wait crosses its chatbot's urgent threshold
 * while this page is open alerts once (per conversation, waiting period and threshold; once
 * per browser, whichever of its tabs sees it first). Follows every chatbot of the agent, on
 * screen or not: their open handoffs (first page, oldest first) loaded on each subscription,
 * then kept by the rows of live updates. */
export class UrgentRealerts {
  /** onUrgent(chatbot id, row, minutes) makes the alert. */
  constructor({ onUrgent, pageSize = 50 }) {
    this.onUrgent = onUrgent;
    this.pageSize = pageSize;
    this.rows = new Map(); // chatbot id -> Map(conversation id -> { row, seenAt })
    this.timers = new Map(); // chatbot id -> NextTimer
    slaSettings.listen((id) => this.schedule(id));
    prune();
  }

  /** A "subscribed" frame (first connect or a reconnect): reload that chatbot's open handoffs. */
  async subscribed(chatbotId) {
    let items;
    try {
      ({ data: { items } } = await api.handoffs(chatbotId, null, this.pageSize));
    } catch (err) {
      console.warn("open handoffs not loaded for the wait-time alerts", err);
      return;
    }
    const known = this.rows.get(chatbotId) || new Map();
    const now = Date.now();
    this.rows.set(chatbotId, new Map(items.map((row) => {
      const was = known.get(row.conversation_id);
      return [row.conversation_id, { row, seenAt: was ? was.seenAt : now }];
    })));
    this.schedule(chatbotId);
  }

  /** One live update of any chatbot of the agent. */
  update(chatbotId, update) {
    if (update.settings_changed) slaSettings.load(chatbotId);
    if (!update.row_upserted && !update.row_removed) return;
    if (!this.rows.has(chatbotId)) this.rows.set(chatbotId, new Map());
    const rows = this.rows.get(chatbotId);
    if (update.row_upserted) {
      const row = update.row_upserted;
      const was = rows.get(row.conversation_id);
      rows.set(row.conversation_id, { row, seenAt: was ? was.seenAt : Date.now() });
    }
    if (update.row_removed) rows.delete(update.row_removed);
    this.schedule(chatbotId);
  }

  schedule(chatbotId) {
    const rows = this.rows.get(chatbotId);
    if (!rows) return;
    const t = slaSettings.get(chatbotId);
    if (!this.timers.has(chatbotId)) this.timers.set(chatbotId, new NextTimer(() => this.check(chatbotId)));
    const now = Date.now();
    let next = null;
    if (t && t.urgent !== null) {
      for (const { row } of rows.values()) {
        const at = waitStart(row) + t.urgent * MINUTE_MS;
        if (!isAssigned(row) && at > now && (next === null || at < next)) next = at;
      }
    }
    this.timers.get(chatbotId).at(next);
  }

  check(chatbotId) {
    const t = slaSettings.get(chatbotId);
    const rows = this.rows.get(chatbotId);
    if (t && t.urgent !== null && rows) {
      const now = Date.now();
      const due = [...rows.values()]
        .map(({ row, seenAt }) => ({ row, seenAt, at: waitStart(row) + t.urgent * MINUTE_MS }))
        .filter(({ row, seenAt, at }) => !isAssigned(row) && at <= now && at > seenAt && now - at <= LATE_MS)
        .sort((a, b) => a.at - b.at);
      for (const { row } of due) {
        if (remember(`${row.conversation_id}|${waitStart(row)}|${t.urgent}`, now)) this.onUrgent(chatbotId, row, t.urgent);
      }
    }
    this.schedule(chatbotId);
  }
}

/** True the first time a key is seen in this browser (localStorage, shared by its tabs). */
const seenHere = new Set();
function remember(key, now) {
  if (seenHere.has(key)) return false;
  seenHere.add(key);
  try {
    if (localStorage.getItem(STORE_PREFIX + key) !== null) return false;
    localStorage.setItem(STORE_PREFIX + key, String(now));
  } catch { /* storage off: this page's memory only */ }
  return true;
}

function prune() {
  try {
    const old = Date.now() - STORE_KEEP_MS;
    for (let i = localStorage.length - 1; i >= 0; i -= 1) {
      const key = localStorage.key(i);
      if (key && key.startsWith(STORE_PREFIX) && Number(localStorage.getItem(key)) < old) localStorage.removeItem(key);
    }
  } catch { /* storage off */ }
}
