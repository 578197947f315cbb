// The agent dashboard: composition of the views, the hash router, the live connection and
// the per-chatbot state they share.

import { api, ApiError, onUnauthorized, setCsrfToken } from "./api.js";
import { ConversationsView, pageSize } from "./conversations.js";
import { h, clear, announce } from "./dom.js";
import { HandoffView, sortRows } from "./handoff.js";
import { ChatbotFeed, LiveConnection } from "./live.js";
import { ReplyPane } from "./pane.js";
import { ToolsView } from "./tools.js";
import { Alerts, isNewHandoff } from "./alerts.js";
import { MissedHandoffs } from "./missed.js";

const TAB_NAMES = { conversations: "Conversations", handoff: "Handoff", tools: "Tools" };
// The gateway's largest snapshot page.
const SNAPSHOT_MAX_ROWS = 200;
// At most this many pages of 50 are read to find handoffs missed while away.
const MISSED_PAGES_MAX = 4;

const app = {
  me: null,
  chatbots: [],
  route: null,
  bot: null, // the current chatbot's live state
  view: null,
  pane: null,
  live: null,
  feeds: new Map(),
  waitingResults: new Map(), // command id -> resolve
  unclaimedResults: new Map(), // command id -> a result that came before anyone waited for it
  alerted: new Set(), // "conversation id|waiting since": handoffs already alerted
  missed: new MissedHandoffs(), // when to look for handoffs this page could not hear about
  ownReopens: new Map(), // conversation id -> when this page reopened it (no alert for that)
  ticker: null,
  todayTimer: null,
};
// For debugging from the console; holds no secrets.
window.handoffDashboard = app;

// ------------------------------------------------------------------ routing
export function parseRoute(hash) {
  const raw = (hash || "").replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  const [bot = "", tab = "", sub = ""] = path.split("/").map((p) => decodeURIComponent(p));
  return { bot, tab, sub, params: new URLSearchParams(query) };
}

function routeHash(bot, tab, { sub = "", params = null } = {}) {
  let hash = `#/${encodeURIComponent(bot)}/${tab}` + (sub ? `/${sub}` : "");
  const q = params ? params.toString() : "";
  return q ? `${hash}?${q}` : hash;
}

function chatbot(id) {
  return app.chatbots.find((c) => c.chatbot_id === id) || null;
}

function go(hash, { replace = false } = {}) {
  if (location.hash === hash) return;
  if (replace) history.replaceState(null, "", hash);
  else history.pushState(null, "", hash);
  onRoute();
}

function onRoute() {
  const r = parseRoute(location.hash);
  let bot = chatbot(r.bot) || chatbot(localStorage.getItem("handoff.lastChatbot")) || app.chatbots[0];
  if (!bot) return renderNoChatbots();
  let tab = TAB_NAMES[r.tab] ? r.tab : (bot.handoff_enabled ? "handoff" : "conversations");
  if (tab === "handoff" && !bot.handoff_enabled) tab = "conversations";
  const sub = tab === "tools" ? (r.sub || "human-handoff") : "";
  const params = new URLSearchParams(r.params);
  const canonical = routeHash(bot.chatbot_id, tab, { sub, params });
  if (canonical !== location.hash) history.replaceState(null, "", canonical);
  localStorage.setItem("handoff.lastChatbot", bot.chatbot_id);

  const prev = app.route;
  app.route = { bot: bot.chatbot_id, tab, sub, params };
  if (!app.bot || app.bot.chatbotId !== bot.chatbot_id) switchChatbot(bot.chatbot_id);
  const sameView = prev && prev.bot === bot.chatbot_id && prev.tab === tab && app.view;
  if (!sameView) mountView();
  else {
    if (tab === "conversations") app.view.setFilter(params.get("status") || "all", params.get("q") || "");
    selectConversation(params.get("c"));
  }
  renderNav();
  updateTitle();
}

// ------------------------------------------------------------------ chatbot state
function switchChatbot(id) {
  app.bot = { chatbotId: id, stats: null, rows: [], nextCursor: null, timezone: undefined, epoch: null };
  if (!app.feeds.has(id)) {
    app.feeds.set(id, new ChatbotFeed(id, {
      fetchSnapshot: async (bot) => (await api.snapshot(bot, snapshotSize(bot))).data,
      onSnapshot: (snapshot) => applySnapshot(id, snapshot),
      onUpdate: (update) => applyUpdate(id, update),
      onError: (err) => showSyncProblem(`Could not load the latest handoffs: ${err.message} Retrying…`),
    }));
  }
  // Every chatbot is subscribed for alerts (main); only the one on screen keeps a feed
  // in order. Load it at once over REST: updates it missed while not on screen are in there.
  app.feeds.get(id).resync();
  // The chatbot's time zone dates the rows ("Nov 3"); fetched once per switch.
  api.settings(id).then(({ data }) => {
    if (app.bot && app.bot.chatbotId === id) {
      app.bot.timezone = data.timezone;
      if (app.pane) app.pane.timezone = data.timezone;
      if (app.view && app.view.tick) app.view.render();
    }
  }).catch((err) => console.warn("chatbot settings not loaded; dates use the browser's time zone", err));
}

/** A resync (after a gap or a reconnect) reloads as many rows as the list shows, so the
 * rows "Load more" brought in do not vanish (up to the API's largest page). */
function snapshotSize(chatbotId) {
  const shown = app.bot && app.bot.chatbotId === chatbotId ? app.bot.rows.length : 0;
  return Math.min(SNAPSHOT_MAX_ROWS, Math.max(pageSize(), shown));
}

function showSyncProblem(text) {
  const el = document.getElementById("sync-error");
  el.textContent = text;
  el.hidden = !text;
}

function applySnapshot(id, snapshot) {
  if (!app.bot || app.bot.chatbotId !== id) return;
  showSyncProblem("");
  app.bot.rows = sortRows([...snapshot.handoffs.items]);
  app.bot.nextCursor = snapshot.handoffs.next_cursor || null;
  app.bot.stats = null;
  applyStats(snapshot.stats);
  if (app.view && app.view instanceof HandoffView) app.view.render();
  // Anything might have been missed while we were away: the open transcript too.
  if (app.pane && app.pane.cid) app.pane.reload();
}

function applyStats(stats) {
  const current = app.bot.stats;
  if (current && Date.parse(stats.computed_at) < Date.parse(current.computed_at)) return;
  app.bot.stats = stats;
  scheduleTodayRollover(stats);
  updateTitle();
}

/** "Today" starts again at the chatbot's next local midnight: refetch the stats then. */
function scheduleTodayRollover(stats) {
  clearTimeout(app.todayTimer);
  const at = Date.parse(stats.today_ends_at);
  if (!Number.isFinite(at)) return;
  const id = app.bot.chatbotId;
  app.todayTimer = setTimeout(async () => {
    try {
      const { data } = await api.stats(id);
      if (app.bot && app.bot.chatbotId === id) {
        applyStats(data);
        if (app.view instanceof HandoffView) app.view.renderStats();
      }
    } catch (err) {
      showSyncProblem(`Could not refresh the stats: ${err.message}`);
    }
  }, Math.max(0, at - Date.now()) + 500);
}

function applyUpdate(id, update) {
  if (!app.bot || app.bot.chatbotId !== id) return;
  const bot = app.bot;
  if (update.stats) applyStats(update.stats);
  if (update.row_upserted) {
    const row = update.row_upserted;
    const i = bot.rows.findIndex((r) => r.conversation_id === row.conversation_id);
    if (i >= 0) bot.rows[i] = row;
    else bot.rows.push(row);
    sortRows(bot.rows);
  }
  if (update.row_removed) bot.rows = bot.rows.filter((r) => r.conversation_id !== update.row_removed);
  if (app.view instanceof HandoffView) app.view.render();
  if (app.view instanceof ConversationsView && update.conversation) app.view.applyConversation(update.conversation);
  if (app.pane) app.pane.applyUpdate(update);
  if (update.settings_changed) refreshChatbots();
}

async function loadMoreHandoffs() {
  const bot = app.bot;
  if (!bot.nextCursor) return;
  try {
    const { data } = await api.handoffs(bot.chatbotId, bot.nextCursor, pageSize());
    const seen = new Set(bot.rows.map((r) => r.conversation_id));
    bot.rows = sortRows(bot.rows.concat(data.items.filter((r) => !seen.has(r.conversation_id))));
    bot.nextCursor = data.next_cursor || null;
    if (app.view instanceof HandoffView) app.view.render();
  } catch (err) {
    announce(err.message);
  }
}

// ------------------------------------------------------------------ views
function mountView() {
  const main = document.getElementById("view");
  clear(main);
  const { bot, tab, params } = app.route;
  app.pane = null;
  const select = (cid) => {
    const p = new URLSearchParams(app.route.params);
    p.set("c", cid);
    go(routeHash(bot, tab, { params: p }));
  };
  if (tab === "handoff") {
    app.view = new HandoffView(main, { store: app.bot, chatbotId: bot, onSelect: select, onLoadMore: loadMoreHandoffs });
    app.pane = newPane(app.view.paneEl);
  } else if (tab === "conversations") {
    app.view = new ConversationsView(main, {
      chatbotId: bot, timezone: app.bot.timezone, status: params.get("status") || "all", q: params.get("q") || "",
      onSelect: select,
      onFilter: (status, q) => {
        const p = new URLSearchParams();
        if (status !== "all") p.set("status", status);
        if (q) p.set("q", q);
        go(routeHash(bot, "conversations", { params: p }), { replace: true });
      },
    });
    app.pane = newPane(app.view.paneEl, {
      emptyTitle: "Select a conversation", emptyText: "Its messages, contact details and summary appear here." });
  } else {
    app.view = new ToolsView(main, { chatbotId: bot, onSaved: (s) => setHandoffEnabled(bot, s.enabled) });
  }
  selectConversation(params.get("c"));
  main.focus({ preventScroll: true });
}

function newPane(el, texts = {}) {
  return new ReplyPane(el, {
    ...texts,
    chatbotId: app.route.bot,
    timezone: app.bot.timezone,
    onConversation: (c) => { if (app.view instanceof ConversationsView) app.view.applyConversation(c); },
    onCommand: (action, cid) => { if (action === "reopen") app.ownReopens.set(cid, Date.now()); },
    awaitResult,
  });
}

function selectConversation(cid) {
  if (!app.pane) return;
  app.view.select(cid || null);
  app.pane.open(cid || null);
  document.body.classList.toggle("pane-open", Boolean(cid));
}

function renderNoChatbots() {
  clear(document.getElementById("view")).append(h("div", { class: "empty-state" },
    h("p", { class: "empty-title", text: "No chatbots yet" }),
    h("p", { class: "empty-text", text: "Ask an administrator to add you to a chatbot." })));
}

// ------------------------------------------------------------------ top bar
function renderNav() {
  const picker = document.getElementById("chatbot-picker");
  clear(picker);
  for (const c of app.chatbots) {
    picker.append(h("option", { value: c.chatbot_id, selected: c.chatbot_id === app.route.bot, text: c.name }));
  }
  picker.hidden = app.chatbots.length < 2;
  document.getElementById("chatbot-name").textContent = chatbot(app.route.bot).name;
  document.getElementById("chatbot-name").hidden = app.chatbots.length >= 2;
  const tabs = document.getElementById("tabs");
  clear(tabs);
  const bot = chatbot(app.route.bot);
  // The Handoff tab sits between Conversations and Tools, only while the tool is on.
  const visible = ["conversations", ...(bot.handoff_enabled ? ["handoff"] : []), "tools"];
  for (const tab of visible) {
    const current = tab === app.route.tab;
    const link = h("a", { href: routeHash(bot.chatbot_id, tab), class: "tab" + (current ? " active" : ""),
      "data-tab": tab, "aria-current": current ? "page" : null }, TAB_NAMES[tab]);
    if (tab === "handoff" && app.bot && app.bot.stats && app.bot.stats.open) {
      link.append(h("span", { class: "tab-count", "aria-label": `${app.bot.stats.open} open`, text: String(app.bot.stats.open) }));
    }
    tabs.append(link);
  }
}

function updateTitle() {
  if (!app.route) return;
  const bot = chatbot(app.route.bot);
  const open = app.bot && app.bot.stats ? app.bot.stats.open : 0;
  document.title = `${open ? `(${open}) ` : ""}${TAB_NAMES[app.route.tab]} — ${bot ? bot.name : "Handoff"}`;
  renderNavSoon();
}

let navPending = false;
function renderNavSoon() {
  if (navPending) return;
  navPending = true;
  queueMicrotask(() => { navPending = false; renderNav(); });
}

function setHandoffEnabled(id, enabled, name) {
  const c = chatbot(id);
  if (!c) return;
  const changed = c.handoff_enabled !== enabled || (name && c.name !== name);
  c.handoff_enabled = enabled;
  if (name) c.name = name;
  if (!changed || !app.route) return;
  if (app.route.bot === id && app.route.tab === "handoff" && !enabled) {
    go(routeHash(id, "conversations"), { replace: true });
    return;
  }
  renderNav();
  updateTitle();
}

async function refreshChatbots() {
  try {
    const { data } = await api.me();
    for (const c of data.chatbots) setHandoffEnabled(c.chatbot_id, c.handoff_enabled, c.name);
  } catch (err) {
    console.warn(err);
  }
}

function setConnection(status) {
  const el = document.getElementById("connection");
  el.dataset.state = status;
  el.textContent = status === "live" ? "Live" : status === "connecting" ? "Connecting…" : "Reconnecting…";
  el.hidden = status === "live";
  document.body.classList.toggle("offline", status !== "live");
}

function onFrame(frame) {
  const feed = frame.chatbot_id ? app.feeds.get(frame.chatbot_id) : null;
  switch (frame.type) {
    case "subscribed": {
      if (feed && app.bot && app.bot.chatbotId === frame.chatbot_id) feed.subscribed();
      const from = app.missed.subscribed(frame);
      if (from !== null) alertMissedHandoffs(frame.chatbot_id, from);
      break;
    }
    case "update": {
      // Alerts for every chatbot of the agent, whichever is on screen (and even while the
      // one on screen is resyncing: the snapshot would bring the row in silently).
      if (frame.update) alertIfNewHandoff(frame.chatbot_id, frame.update);
      const from = app.missed.update(frame);
      if (from !== null) alertMissedHandoffs(frame.chatbot_id, from);
      if (feed && app.bot && app.bot.chatbotId === frame.chatbot_id) feed.update(frame);
      break;
    }
    case "command_result": {
      const id = frame.result.command_id;
      const resolve = app.waitingResults.get(id);
      if (resolve) { app.waitingResults.delete(id); resolve(frame.result); }
      else keepUnclaimed(id, frame.result);
      break;
    }
    case "settings":
      setHandoffEnabled(frame.chatbot_id, frame.handoff_enabled, frame.name);
      break;
    case "error":
      if (frame.code === 403) announce(frame.error);
      else console.warn("live error", frame.error);
      break;
    default:
      break;
  }
}

// ------------------------------------------------------------------ alerts & account
const alerts = new Alerts({ isMuted: () => Boolean(app.me && app.me.agent.muted) });
app.alerts = alerts;

function alertIfNewHandoff(chatbotId, update) {
  if (isNewHandoff(update)) alertHandoff(chatbotId, update.row_upserted);
}

/** Alert once per waiting period of a conversation; true when this call alerted. */
function alertHandoff(chatbotId, row, { beep = true, announced = true } = {}) {
  const key = `${row.conversation_id}|${Date.parse(row.waiting_since)}`;
  if (app.alerted.has(key)) return false;
  app.alerted.add(key);
  // The agent's own Reopen puts the row back: nothing to be alerted about.
  const reopenedAt = app.ownReopens.get(row.conversation_id);
  if (reopenedAt !== undefined) {
    app.ownReopens.delete(row.conversation_id);
    if (Date.now() - reopenedAt < 60000) return false;
  }
  alerts.handoffArrived(row, chatbot(chatbotId), { beep });
  if (announced) announce(newHandoffText(chatbotId, row));
  return true;
}

function newHandoffText(chatbotId, row) {
  return `New handoff${whereOf(chatbotId)}: ${row.display_name}${row.reason ? ` — ${row.reason}` : ""}`;
}

function whereOf(chatbotId) {
  const bot = chatbot(chatbotId);
  return app.bot && app.bot.chatbotId === chatbotId ? "" : ` in ${bot ? bot.name : chatbotId}`;
}

/** Handoffs of a chatbot whose waiting began after `from` and that this page has not alerted
 * yet (it could not hear about them): alert them now, oldest first, with one beep. The
 * Needs Reply conversations come most recently changed first, so the pages after `from`
 * hold every one of them. */
async function alertMissedHandoffs(chatbotId, from) {
  const missed = [];
  let cursor = null;
  try {
    for (let page = 0; page < MISSED_PAGES_MAX; page += 1) {
      const { data } = await api.conversations(chatbotId, { status: "needs_reply", cursor, limit: 50 });
      missed.push(...data.items.filter((c) => Date.parse(c.waiting_since) > from));
      const last = data.items[data.items.length - 1];
      if (!data.next_cursor || !last || Date.parse(last.updated_at) <= from) break;
      cursor = data.next_cursor;
    }
  } catch (err) {
    console.warn("could not check for handoffs missed while away", err);
    return;
  }
  missed.sort((a, b) => Date.parse(a.waiting_since) - Date.parse(b.waiting_since));
  const alerted = [];
  for (const c of missed) {
    if (alertHandoff(chatbotId, c, { beep: alerted.length === 0, announced: false })) alerted.push(c);
  }
  if (alerted.length === 1) {
    announce(newHandoffText(chatbotId, alerted[0]));
  } else if (alerted.length > 1) {
    announce(`${alerted.length} new handoffs${whereOf(chatbotId)}: ${alerted.map((c) => c.display_name).join(", ")}`);
  }
}

/** A command_result can beat the 202 that makes the pane wait for it: keep it a while. */
function keepUnclaimed(commandId, result) {
  app.unclaimedResults.set(commandId, result);
  setTimeout(() => app.unclaimedResults.delete(commandId), 60000);
}

function awaitResult(commandId) {
  if (app.unclaimedResults.has(commandId)) {
    const result = app.unclaimedResults.get(commandId);
    app.unclaimedResults.delete(commandId);
    return { result: Promise.resolve(result), cancel: () => {} };
  }
  return {
    result: new Promise((resolve) => app.waitingResults.set(commandId, resolve)),
    cancel: () => app.waitingResults.delete(commandId),
  };
}

function renderAccount() {
  const agent = app.me.agent;
  document.getElementById("agent-name").textContent = agent.display_name || agent.email;
  const mute = document.getElementById("mute");
  const paint = () => {
    mute.setAttribute("aria-pressed", agent.muted ? "true" : "false");
    mute.textContent = agent.muted ? "Alerts off" : "Alerts on";
    mute.title = agent.muted ? "Turn handoff alerts (sound and notifications) back on" : "Mute handoff alerts (sound and notifications)";
  };
  paint();
  mute.onclick = async () => {
    const want = !agent.muted;
    mute.disabled = true;
    try {
      const { data } = await api.setMuted(want);
      agent.muted = data && typeof data.muted === "boolean" ? data.muted : want;
    } catch (err) {
      announce(err.message);
      alert(err.message);
    } finally {
      mute.disabled = false;
      paint();
    }
    alerts.unlockAudio();
  };
  const notify = document.getElementById("notify");
  const paintNotify = () => { notify.hidden = !alerts.canAskPermission(); };
  paintNotify();
  notify.onclick = async () => { await alerts.askPermission(); paintNotify(); };
  document.getElementById("logout").onclick = async () => {
    // Stop the live connection first: its reconnect would otherwise race us to the login page.
    app.live.stop();
    try {
      await api.logout();
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401) {
        alert(err.message);
        app.live.start();
        return;
      }
    }
    location.assign("/login");
  };
  document.getElementById("chatbot-picker").onchange = (e) => go(routeHash(e.target.value, app.route.tab === "tools" ? "tools" : "handoff"));
}

async function main() {
  let me;
  try {
    me = (await api.me()).data;
  } catch (err) {
    if (err.status === 401) return; // onUnauthorized already went to the login page
    clear(document.getElementById("view")).append(h("div", { class: "error", role: "alert", text: err.message }));
    return;
  }
  app.me = me;
  app.chatbots = [...me.chatbots].sort((x, y) => (x.name || x.chatbot_id).localeCompare(y.name || y.chatbot_id));
  setCsrfToken(me.csrf_token);
  renderAccount();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  app.live = new LiveConnection({ url: `${proto}://${location.host}/ws`, onFrame, onStatus: setConnection, onUnauthorized });
  // Every chatbot of the agent, so a handoff in any of them alerts (sent on every connect).
  for (const c of app.chatbots) app.live.subscribe(c.chatbot_id);
  app.live.start();
  window.addEventListener("hashchange", onRoute);
  window.addEventListener("popstate", onRoute);
  // Browsers only play sound after a user gesture: unlock audio on the first one.
  document.addEventListener("pointerdown", () => alerts.unlockAudio(), { once: true });
  document.addEventListener("keydown", () => alerts.unlockAudio(), { once: true });
  onRoute();
  app.ticker = setInterval(() => { if (app.view && app.view.tick) app.view.tick(); }, 10000);
}

main();
