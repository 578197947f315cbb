// Which handoffs alert, and once only: a new handoff in any chatbot of the agent (whichever
// is on screen), and the ones the page could not hear about (after a reconnect or a lost
// update), looked up over REST. alerts.js makes the sound and the notification.

import { api } from "./api.js";
import { announce } from "./dom.js";
import { isNewHandoff, newMessageAfterClose } from "./alerts.js";
import { MissedHandoffs } from "./missed.js";
import { UrgentRealerts } from "./sla.js";

// At most this many pages of 50 are read to find handoffs missed while away.
const MISSED_PAGES_MAX = 4;
// The agent's own Reopen puts the row back: no alert for it within this long.
const OWN_REOPEN_MS = 60000;

export class HandoffAlerting {
  /** chatbotOnScreen() is the id of the chatbot on screen (its alerts do not name it). */
  constructor({ alerts, chatbots, chatbotOnScreen }) {
    this.alerts = alerts;
    this.chatbots = chatbots;
    this.chatbotOnScreen = chatbotOnScreen;
    this.alerted = new Set(); // "conversation id|waiting since": handoffs already alerted
    this.afterClose = new Set(); // "conversation id|first unseen message": bursts already alerted
    this.missed = new MissedHandoffs(); // when to look for handoffs this page could not hear about
    this.ownReopens = new Map(); // conversation id -> when this page reopened it
    // Handoffs left waiting past their chatbot's urgent threshold alert again (sla.js).
    this.urgent = new UrgentRealerts({ onUrgent: (bot, row, minutes) => this.alertUrgent(bot, row, minutes) });
  }

  /** A "subscribed" frame: after a reconnect, look for what was missed meanwhile. */
  subscribed(frame) {
    const from = this.missed.subscribed(frame);
    if (from !== null) this.alertMissed(frame.chatbot_id, from);
    const bot = this.chatbots.get(frame.chatbot_id);
    if (bot && bot.handoff_enabled) this.urgent.subscribed(frame.chatbot_id);
  }

  /** An "update" frame of any chatbot of the agent (even while the one on screen is
   * resyncing: the snapshot would bring the row in silently). */
  update(frame) {
    if (frame.update && isNewHandoff(frame.update)) this.alertHandoff(frame.chatbot_id, frame.update.row_upserted);
    if (frame.update) this.alertAfterClose(frame.chatbot_id, frame.update);
    if (frame.update) this.urgent.update(frame.chatbot_id, frame.update);
    const from = this.missed.update(frame);
    if (from !== null) this.alertMissed(frame.chatbot_id, from);
  }

  /** This page sent a command: its own Reopen is nothing to be alerted about. */
  commandSent(action, conversationId) {
    if (action === "reopen") this.ownReopens.set(conversationId, Date.now());
  }

  /** Alert once per waiting period of a conversation; true when this call alerted. */
  alertHandoff(chatbotId, row, { beep = true, announced = true } = {}) {
    const key = `${row.conversation_id}|${Date.parse(row.waiting_since)}`;
    if (this.alerted.has(key)) return false;
    this.alerted.add(key);
    const reopenedAt = this.ownReopens.get(row.conversation_id);
    if (reopenedAt !== undefined) {
      this.ownReopens.delete(row.conversation_id);
      if (Date.now() - reopenedAt < OWN_REOPEN_MS) return false;
    }
    this.alerts.handoffArrived(row, this.chatbots.get(chatbotId), { beep });
    if (announced) announce(this.newHandoffText(chatbotId, row));
    return true;
  }

  /** A visitor wrote to a closed conversation: alert once per burst of such messages (the
   * mark's time), in whichever chatbot. */
  alertAfterClose(chatbotId, update) {
    const key = newMessageAfterClose(update);
    if (!key || this.afterClose.has(key)) return;
    this.afterClose.add(key);
    this.alerts.messageAfterClose(update.conversation, update.message, this.chatbots.get(chatbotId));
    announce(`New message after close${this.whereOf(chatbotId)}: ${update.conversation.display_name}`);
  }

  alertUrgent(chatbotId, row, minutes) {
    this.alerts.waitUrgent(row, this.chatbots.get(chatbotId), minutes);
    announce(`Waiting over ${minutes} min${this.whereOf(chatbotId)}: ${row.display_name}`);
  }

  newHandoffText(chatbotId, row) {
    return `New handoff${this.whereOf(chatbotId)}: ${row.display_name}${row.reason ? ` — ${row.reason}` : ""}`;
  }

  whereOf(chatbotId) {
    const bot = this.chatbots.get(chatbotId);
    return this.chatbotOnScreen() === chatbotId ? "" : ` in ${bot ? bot.name : chatbotId}`;
  }

  /** Handoffs of a chatbot whose waiting began after `from` and that this page has not
   * alerted yet: alert them now, oldest first, with one beep. The Needs Reply
   * conversations come most recently changed first, so the pages after `from` hold every
   * one of them. */
  async alertMissed(chatbotId, from) {
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
      if (this.alertHandoff(chatbotId, c, { beep: alerted.length === 0, announced: false })) alerted.push(c);
    }
    if (alerted.length === 1) {
      announce(this.newHandoffText(chatbotId, alerted[0]));
    } else if (alerted.length > 1) {
      announce(`${alerted.length} new handoffs${this.whereOf(chatbotId)}: ${alerted.map((c) => c.display_name).join(", ")}`);
    }
  }
}
