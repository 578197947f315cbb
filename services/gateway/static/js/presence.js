// Presence (docs/contracts.md "Presence and claims"): who else has a conversation's pane open
// and who is typing in it, live across every gateway. Advisory only: it never blocks anything.
//
// This page tells the gateway what its pane shows ("presence" frames: viewing / typing / left),
// repeats it every HEARTBEAT_MS while the pane is open (the gateway forgets an entry nobody
// repeats), and shows the others' entries on the rows and in the pane. An entry is dropped
// when its agent left, or ttl_s after its last refresh (its gateway died).

import { h, clear } from "./dom.js";

// The gateway keeps an entry for PRESENCE_TTL_S (15 s by default, at least 10): three chances.
const HEARTBEAT_MS = 5000;
// Typing turns back into viewing after this long without a keystroke.
const TYPING_IDLE_MS = 4000;
const SWEEP_MS = 1000;

/** "Alex" -> "A", "Alex Smith" -> "AS", "dana.lee@example.com" -> "DL". */
export function initials(name) {
  const base = String(name || "?").split("@")[0];
  const words = base.split(/[\s._-]+/).filter(Boolean);
  return (words.slice(0, 2).map((w) => w[0]).join("") || "?").toUpperCase();
}

/** "Alex is viewing" / "Alex is typing…" */
export function presenceText(entry) {
  return `${entry.name} is ${entry.state === "typing" ? "typing…" : "viewing"}`;
}

export function avatar(name, title) {
  return h("span", { class: "avatar", title: title || name, "aria-hidden": "true", text: initials(name) });
}

export class PresenceBoard {
  constructor({ now = () => Date.now() } = {}) {
    this.now = now;
    this.live = null;
    this.me = null; // the signed-in agent's id: their own entries are not shown
    this.others = new Map(); // chatbot id -> Map(conn -> {entry, expiresAt})
    this.mine = new Map(); // chatbot id -> {cid, state, el (the pane's presence line), sentAt}
    this.typingTimers = new Map();
    this.rowsTarget = null; // {el: the list, chatbotId}
    this.timer = null;
  }

  attach(live, agentId) {
    this.live = live;
    this.me = agentId;
    clearInterval(this.timer);
    this.timer = setInterval(() => this.sweep(), SWEEP_MS);
  }

  // ------------------------------------------------------------------ what this page shows
  /** The pane shows `cid` of the chatbot (null: nothing). */
  view(chatbotId, cid) {
    const current = this.mine.get(chatbotId);
    if (!cid) {
      if (current) this.leave(chatbotId);
      return;
    }
    if (current && current.cid === cid) {
      current.el = null; // a new pane of it is on its way: not left meanwhile
      return;
    }
    this.mine.set(chatbotId, { cid, state: "viewing", el: null, sentAt: 0 });
    this.send(chatbotId);
  }

  /** A keystroke in the reply box: typing, until TYPING_IDLE_MS without one. */
  typing(chatbotId, cid) {
    const current = this.mine.get(chatbotId);
    if (!current || current.cid !== cid) return;
    if (current.state !== "typing") {
      current.state = "typing";
      this.send(chatbotId);
    }
    clearTimeout(this.typingTimers.get(chatbotId));
    this.typingTimers.set(chatbotId, setTimeout(() => {
      const still = this.mine.get(chatbotId);
      if (still && still.cid === cid && still.state === "typing") {
        still.state = "viewing";
        this.send(chatbotId);
      }
    }, TYPING_IDLE_MS));
  }

  leave(chatbotId) {
    const current = this.mine.get(chatbotId);
    if (!current) return;
    this.mine.delete(chatbotId);
    clearTimeout(this.typingTimers.get(chatbotId));
    this.frame(chatbotId, current.cid, "left");
  }

  send(chatbotId) {
    const current = this.mine.get(chatbotId);
    if (!current) return;
    current.sentAt = this.now();
    this.frame(chatbotId, current.cid, current.state);
  }

  frame(chatbotId, cid, state) {
    if (this.live) this.live.send({ type: "presence", chatbot_id: chatbotId, conversation_id: cid, state });
  }

  /** A (re)subscription: the gateway may not know what this page shows (a new socket). */
  subscribed(chatbotId) {
    if (this.mine.has(chatbotId)) this.send(chatbotId);
  }

  /** Every second: the heartbeat, a pane that went away (another tab, view or chatbot) is
   * left, and the others' entries nobody refreshed expire. */
  sweep() {
    const now = this.now();
    for (const [chatbotId, current] of [...this.mine]) {
      if (current.el && !current.el.isConnected) this.leave(chatbotId);
      else if (now - current.sentAt >= HEARTBEAT_MS) this.send(chatbotId);
    }
    let expired = false;
    for (const entries of this.others.values()) {
      for (const [conn, item] of [...entries]) {
        if (item.expiresAt <= now) {
          entries.delete(conn);
          expired = true;
        }
      }
    }
    if (expired) this.paint();
  }

  // ------------------------------------------------------------------ what the others show
  /** A "presence" frame from the gateway. */
  apply(frame) {
    const now = this.now();
    let entries = this.others.get(frame.chatbot_id);
    if (!entries || frame.whole) {
      entries = new Map();
      this.others.set(frame.chatbot_id, entries);
    }
    for (const entry of frame.entries || []) {
      if (entry.state === "left") entries.delete(entry.conn);
      else entries.set(entry.conn, { entry, expiresAt: now + Number(entry.ttl_s) * 1000 });
    }
    this.paint();
  }

  /** The other agents in a conversation, one entry each (typing wins over viewing). */
  in(chatbotId, cid) {
    const byAgent = new Map();
    for (const { entry } of (this.others.get(chatbotId) || new Map()).values()) {
      if (entry.conversation_id !== cid || entry.agent_id === this.me) continue;
      const known = byAgent.get(entry.agent_id);
      if (!known || entry.state === "typing") byAgent.set(entry.agent_id, entry);
    }
    return [...byAgent.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  // ------------------------------------------------------------------ painting
  /** The rows of the list on screen show who is there (called after every render). */
  paintRows(listEl, chatbotId) {
    this.rowsTarget = { el: listEl, chatbotId };
    this.paint();
  }

  /** The pane's presence line (placed under its header); kept current as frames come. */
  paneElement(chatbotId, cid) {
    const el = h("p", { class: "pane-presence", role: "status", "aria-live": "polite", dataset: { cid } });
    this.view(chatbotId, cid);
    this.mine.get(chatbotId).el = el;
    this.fillPane(el, chatbotId, cid);
    return el;
  }

  fillPane(el, chatbotId, cid) {
    const here = this.in(chatbotId, cid);
    clear(el);
    el.hidden = !here.length;
    for (const entry of here) {
      el.append(h("span", { class: `presence presence-${entry.state}`, dataset: { agent: entry.agent_id } },
        avatar(entry.name), h("span", { class: "presence-text", text: presenceText(entry) })));
    }
  }

  paint() {
    for (const [chatbotId, current] of this.mine) {
      if (current.el && current.el.isConnected) this.fillPane(current.el, chatbotId, current.cid);
    }
    const target = this.rowsTarget;
    if (!target || !target.el.isConnected) return;
    for (const li of target.el.querySelectorAll(".handoff-row[data-cid]")) {
      const here = this.in(target.chatbotId, li.dataset.cid);
      let slot = li.querySelector(".row-presence");
      if (!here.length) {
        if (slot) slot.remove();
        continue;
      }
      if (!slot) {
        slot = h("div", { class: "row-presence" });
        li.append(slot);
      }
      clear(slot).append(...here.map((entry) => h("span", { class: `presence presence-${entry.state}` },
        avatar(entry.name), h("span", { class: "presence-text", text: presenceText(entry) }))));
    }
  }
}

// One board per page: the live connection feeds it, the list and the pane paint from it.
export const presence = new PresenceBoard();
