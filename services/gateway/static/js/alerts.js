// Handoff alerts: a desktop notification and a short beep when a handoff arrives, unless the
// agent muted them. Permission is asked only when the agent clicks the button.

/** A handoff arrived: the update that starts a conversation's waiting period (a handoff,
 * or a Reopen, which starts a new one). Only that update has the conversation's last change
 * (updated_at) at the instant its waiting began (waiting_since), and carries no message;
 * later updates of the same open handoff (a visitor message, contact details, a row on a
 * list page not loaded yet) do not alert. */
export function isNewHandoff(update) {
  const row = update.row_upserted;
  const c = update.conversation;
  if (!row || !c || update.message || c.status !== "handed_off" || !c.waiting_since) return false;
  const since = Date.parse(c.waiting_since);
  return Number.isFinite(since) && since === Date.parse(c.updated_at) && since === Date.parse(row.waiting_since);
}

/** A visitor wrote to a closed conversation (it stays closed; docs/contracts.md): the
 * update that carries their message, with the conversation marked. Returns the mark's key,
 * "conversation id|first unseen message": one alert per burst, not per message. */
export function newMessageAfterClose(update) {
  const c = update.conversation;
  const m = update.message;
  if (!c || !m || c.status !== "closed" || m.sender !== "visitor" || !c.new_after_close || !c.new_after_close_at) return null;
  return `${c.conversation_id}|${Date.parse(c.new_after_close_at)}`;
}

export class Alerts {
  constructor({ isMuted }) {
    this.isMuted = isMuted;
    this.audio = null;
  }

  canAskPermission() {
    return "Notification" in window && Notification.permission === "default";
  }

  async askPermission() {
    if (!("Notification" in window)) return "unsupported";
    this.unlockAudio();
    return Notification.requestPermission();
  }

  unlockAudio() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    if (!this.audio) this.audio = new Ctx();
    if (this.audio.state === "suspended") this.audio.resume().catch(() => {});
  }

  /** `beep: false` for the 2nd, 3rd… of handoffs alerted together (one beep is enough). */
  handoffArrived(row, chatbot, { beep = true } = {}) {
    this.alert(`New handoff — ${chatbot ? chatbot.name : "Handoff"}`,
      row.reason ? `${row.display_name}: ${row.reason}` : row.display_name,
      row, "handoff", { beep });
  }

  /** A visitor wrote to a closed conversation: opens it in Conversations when clicked. */
  messageAfterClose(conversation, message, chatbot) {
    this.alert(`New message after close — ${chatbot ? chatbot.name : "Handoff"}`,
      `${conversation.display_name}: ${message.text.slice(0, 140)}`, conversation, "conversations", { beep: true });
  }

  /** An unassigned handoff has waited past its chatbot's urgent threshold (sla.js). Its
   * notification replaces the handoff's (same tag) and alerts again. */
  waitUrgent(row, chatbot, minutes) {
    this.alert(`Waiting over ${minutes} min — ${chatbot ? chatbot.name : "Handoff"}`,
      row.reason ? `${row.display_name}: ${row.reason}` : row.display_name, row, "handoff", { beep: true, renotify: true });
  }

  /** The beep and the desktop notification (unless muted); clicking it opens `tab` on the
   * conversation. */
  alert(title, body, { chatbot_id: chatbotId, conversation_id: cid }, tab, { beep, renotify = false }) {
    if (this.isMuted()) return;
    if (beep) this.beep();
    if ("Notification" in window && Notification.permission === "granted") {
      try {
        const n = new Notification(title, { body, tag: cid, ...(renotify ? { renotify } : {}) });
        n.onclick = () => {
          window.focus();
          location.hash = `#/${encodeURIComponent(chatbotId)}/${tab}?c=${encodeURIComponent(cid)}`;
          n.close();
        };
      } catch (err) {
        console.warn("notification failed", err);
      }
    }
  }

  beep() {
    try {
      this.unlockAudio();
      const ctx = this.audio;
      if (!ctx) return;
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "sine";
      osc.frequency.value = 880;
      const t = ctx.currentTime;
      gain.gain.setValueAtTime(0.0001, t);
      gain.gain.exponentialRampToValueAtTime(0.2, t + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.25);
      osc.connect(gain).connect(ctx.destination);
      osc.start(t);
      osc.stop(t + 0.3);
    } catch (err) {
      console.warn("beep failed", err);
    }
  }
}
