// The chatbot on screen: its open handoff rows (oldest first), stats, next page cursor and
// time zone. One ChatbotFeed per chatbot keeps them in order (seq/epoch, resync from a
// snapshot); the views read the state and are told when it changed.

import { api } from "./api.js";
import { pageSize } from "./conversations.js";
import { announce } from "./dom.js";
import { sortRows } from "./handoff.js";
import { ChatbotFeed } from "./live.js";

// The gateway's largest snapshot page.
const SNAPSHOT_MAX_ROWS = 200;

export class ChatbotState {
  constructor(chatbotId) {
    this.chatbotId = chatbotId;
    this.stats = null;
    this.rows = [];
    this.nextCursor = null;
    this.timezone = undefined;
  }
}

export class ChatbotStore {
  /** The callbacks get the current ChatbotState: onSnapshot(state) after a (re)load,
   * onStats(state) when its stats changed, onUpdate(state, update) after a live update;
   * onProblem(text) ("" = none) for the sync banner. */
  constructor({ onSnapshot, onStats, onUpdate, onProblem }) {
    Object.assign(this, { onSnapshot, onStats, onUpdate, onProblem });
    this.current = null;
    this.feeds = new Map(); // chatbot id -> ChatbotFeed
    this.todayTimer = null;
  }

  isCurrent(chatbotId) {
    return Boolean(this.current && this.current.chatbotId === chatbotId);
  }

  /** Put this chatbot on screen: a fresh state, loaded at once over REST. */
  show(id) {
    this.current = new ChatbotState(id);
    if (!this.feeds.has(id)) {
      this.feeds.set(id, new ChatbotFeed(id, {
        fetchSnapshot: async (bot) => (await api.snapshot(bot, this.snapshotSize(bot))).data,
        onSnapshot: (snapshot) => this.applySnapshot(id, snapshot),
        onUpdate: (update) => this.applyUpdate(id, update),
        onError: (err) => this.onProblem(`Could not load the latest handoffs: ${err.message} Retrying…`),
      }));
    }
    // Every chatbot is subscribed for alerts; only the one on screen keeps a feed in order.
    // Load it at once: updates it missed while not on screen are in the snapshot.
    this.feeds.get(id).resync();
    // The chatbot's time zone, for the hover titles of times (shown in the agent's own);
    // fetched once per switch.
    api.settings(id).then(({ data }) => {
      if (this.isCurrent(id)) this.current.timezone = data.timezone;
    }).catch((err) => console.warn("chatbot settings not loaded; dates use the browser's time zone", err));
  }

  /** A "subscribed" frame: updates may have been missed, the feed on screen resyncs. */
  subscribed(chatbotId) {
    const feed = this.feeds.get(chatbotId);
    if (feed && this.isCurrent(chatbotId)) feed.subscribed();
  }

  /** An "update" frame, applied in order by the feed of the chatbot on screen. */
  update(frame) {
    const feed = this.feeds.get(frame.chatbot_id);
    if (feed && this.isCurrent(frame.chatbot_id)) feed.update(frame);
  }

  /** A resync (after a gap or a reconnect) reloads as many rows as the list shows, so the
   * rows "Load more" brought in do not vanish (up to the API's largest page). */
  snapshotSize(chatbotId) {
    const shown = this.isCurrent(chatbotId) ? this.current.rows.length : 0;
    return Math.min(SNAPSHOT_MAX_ROWS, Math.max(pageSize(), shown));
  }

  applySnapshot(id, snapshot) {
    if (!this.isCurrent(id)) return;
    const state = this.current;
    this.onProblem("");
    state.rows = sortRows([...snapshot.handoffs.items]);
    state.nextCursor = snapshot.handoffs.next_cursor || null;
    state.stats = null;
    this.applyStats(snapshot.stats);
    this.onSnapshot(state);
  }

  applyStats(stats) {
    const state = this.current;
    if (state.stats && Date.parse(stats.computed_at) < Date.parse(state.stats.computed_at)) return;
    state.stats = stats;
    this.scheduleTodayRollover(stats);
    this.onStats(state);
  }

  /** "Today" starts again at the chatbot's next local midnight: refetch the stats then. */
  scheduleTodayRollover(stats) {
    clearTimeout(this.todayTimer);
    const at = Date.parse(stats.today_ends_at);
    if (!Number.isFinite(at)) return;
    const id = this.current.chatbotId;
    this.todayTimer = setTimeout(async () => {
      try {
        const { data } = await api.stats(id);
        if (this.isCurrent(id)) this.applyStats(data);
      } catch (err) {
        this.onProblem(`Could not refresh the stats: ${err.message}`);
      }
    }, Math.max(0, at - Date.now()) + 500);
  }

  applyUpdate(id, update) {
    if (!this.isCurrent(id)) return;
    const state = this.current;
    if (update.stats) this.applyStats(update.stats);
    if (update.row_upserted) {
      const row = update.row_upserted;
      const i = state.rows.findIndex((r) => r.conversation_id === row.conversation_id);
      if (i >= 0) state.rows[i] = row;
      else state.rows.push(row);
      sortRows(state.rows);
    }
    if (update.row_removed) state.rows = state.rows.filter((r) => r.conversation_id !== update.row_removed);
    this.onUpdate(state, update);
  }

  /** The next page of open handoffs ("Load more"); true when the rows grew. */
  async loadMore() {
    const state = this.current;
    if (!state.nextCursor) return false;
    try {
      const { data } = await api.handoffs(state.chatbotId, state.nextCursor, pageSize());
      const seen = new Set(state.rows.map((r) => r.conversation_id));
      state.rows = sortRows(state.rows.concat(data.items.filter((r) => !seen.has(r.conversation_id))));
      state.nextCursor = data.next_cursor || null;
      return true;
    } catch (err) {
      announce(err.message);
      return false;
    }
  }
}
