// The reply pane: one conversation's header, contact, Summary banner, transcript, actions
// and reply box. Shared by the Handoff tab and the Conversations table.

import { api, ApiError, newCommandId } from "./api.js";
import { h, clear, announce } from "./dom.js";
import { channelLabel, formatMessageTime } from "./format.js";

// The latest 100 messages first, earlier ones on demand; window.HANDOFF_MESSAGE_PAGE_SIZE overrides.
function messagePageSize() {
  const n = Number(window.HANDOFF_MESSAGE_PAGE_SIZE);
  return Number.isInteger(n) && n > 0 && n <= 500 ? n : 100;
}

export const STATUS_LABELS = { handed_off: "Needs reply", active: "Active", closed: "Closed" };
const ACTIONS = {
  "return-to-ai": { label: "Return to AI", done: "Returned to AI." },
  close: { label: "Close", done: "Conversation closed." },
  reopen: { label: "Reopen", done: "Conversation reopened." },
};

export class ReplyPane {
  constructor(root, { chatbotId, timezone, onConversation, onCommand, awaitResult, emptyTitle, emptyText }) {
    this.root = root;
    this.emptyTitle = emptyTitle || "Select a handoff to reply";
    this.emptyText = emptyText || "The visitor's messages and summary appear here.";
    this.chatbotId = chatbotId;
    this.timezone = timezone;
    this.onConversation = onConversation || (() => {});
    this.awaitResult = awaitResult; // (commandId) -> {result: Promise<CommandResult>, cancel()}
    this.onCommand = onCommand || (() => {}); // (action, conversation id) as a command is sent
    this.cid = null;
    this.conversation = null;
    this.messages = [];
    this.before = null;
    this.loading = false;
    this.error = null; // {text, retry?}
    this.notice = null;
    this.sending = null; // the action in flight
    this.draft = "";
    this.loadSeq = 0;
    this.render();
  }

  async open(cid) {
    if (cid === this.cid && this.conversation) return;
    this.cid = cid;
    this.conversation = null;
    this.messages = [];
    this.before = null;
    this.error = null;
    this.notice = null;
    this.draft = "";
    if (!cid) {
      this.render();
      return;
    }
    this.loading = true;
    this.render();
    await this.reload();
  }

  /** Fetch the conversation again (after a resync or a command): messages merge by id. */
  async reload() {
    const cid = this.cid;
    if (!cid) return;
    const mine = ++this.loadSeq;
    try {
      const { data } = await api.conversation(this.chatbotId, cid, { limit: messagePageSize() });
      if (mine !== this.loadSeq || cid !== this.cid) return;
      this.conversation = data.conversation;
      this.mergeMessages(data.messages.items);
      if (this.before === null) this.before = data.messages.next_cursor || null;
      this.loading = false;
      this.render();
    } catch (err) {
      if (cid !== this.cid) return;
      this.loading = false;
      this.error = { text: err.message };
      this.render();
    }
  }

  async loadEarlier() {
    if (!this.before) return;
    try {
      const { data } = await api.conversation(this.chatbotId, this.cid, { before: this.before, limit: messagePageSize() });
      this.mergeMessages(data.messages.items, { earlier: true });
      this.before = data.messages.next_cursor || null;
      this.render({ keepScroll: true });
    } catch (err) {
      this.showError(err.message);
    }
  }

  /** Known messages are updated in place (delivery status); new ones join in the server's
   * order: earlier pages before, the latest page and live messages after. The final sort
   * by time is stable, so messages with the same timestamp keep the server's order. */
  mergeMessages(items, { earlier = false } = {}) {
    const index = new Map(this.messages.map((m, i) => [m.message_id, i]));
    const fresh = [];
    for (const m of items) {
      if (index.has(m.message_id)) {
        const i = index.get(m.message_id);
        this.messages[i] = { ...this.messages[i], ...m };
      } else {
        fresh.push(m);
      }
    }
    const merged = earlier ? fresh.concat(this.messages) : this.messages.concat(fresh);
    this.messages = merged.sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at));
  }

  /** A live DashboardUpdate: only what concerns the open conversation. */
  applyUpdate(update) {
    if (!this.cid) return;
    const about = update.conversation_id || (update.conversation && update.conversation.conversation_id);
    if (about !== this.cid) return;
    let changed = false;
    if (update.conversation && update.conversation.conversation_id === this.cid) {
      this.conversation = { ...update.conversation, summary: update.conversation.summary || (this.conversation && this.conversation.summary) };
      changed = true;
    }
    if (update.message && update.message.conversation_id === this.cid) {
      this.mergeMessages([update.message]);
      if (update.message.sender === "visitor") announce(`New message from ${this.conversation ? this.conversation.display_name : "the visitor"}`);
      changed = true;
    }
    if (update.summary && this.conversation && (!this.conversation.handoff_id || update.summary.handoff_id === this.conversation.handoff_id)) {
      this.conversation = { ...this.conversation, summary: update.summary };
      changed = true;
    }
    if (changed) this.render();
  }

  applyConversation(conversation) {
    if (conversation && conversation.conversation_id === this.cid) {
      this.conversation = { ...conversation, summary: conversation.summary || (this.conversation && this.conversation.summary) };
      this.render();
    }
  }

  showError(text, retry) {
    this.error = { text, retry };
    this.notice = null;
    this.render();
  }

  // ------------------------------------------------------------------ commands
  /** Send one agent action. A fresh click gets a fresh command id; "Retry" reuses it. */
  async run(action, text, commandId = newCommandId()) {
    if (this.sending) return;
    const cid = this.cid;
    this.sending = action;
    this.error = null;
    this.notice = null;
    this.render();
    const body = { command_id: commandId };
    if (action === "reply") body.text = text;
    this.onCommand(action, cid);
    let result = null;
    try {
      const response = await api.command(this.chatbotId, cid, action, body);
      result = response.data;
      if (response.status === 202) {
        // The queue has not answered yet; the command is still applied once. Wait for its
        // command_result on the websocket.
        this.notice = "Sent — waiting for confirmation…";
        this.render();
        const waiting = this.awaitResult(commandId);
        let timer;
        try {
          result = await Promise.race([
            waiting.result,
            new Promise((_, reject) => { timer = setTimeout(() => reject(new ApiError(202,
              "No confirmation yet. Retrying is safe: the action is applied only once.", { retryable: true })), 30000); }),
          ]);
        } finally {
          clearTimeout(timer);
          waiting.cancel();
        }
      }
    } catch (err) {
      this.sending = null;
      if (cid !== this.cid) return;
      const retry = err.retryable ? () => this.run(action, text, commandId) : null;
      this.showError(err.message, retry);
      this.focusAfter(action, { failed: true });
      return;
    }
    this.sending = null;
    if (cid !== this.cid) return;
    if (result && result.ok === false) {
      this.showError(result.error || "The action was refused.");
      this.focusAfter(action, { failed: true });
      return;
    }
    if (action === "reply") {
      this.draft = "";
      this.notice = null;
    } else {
      this.notice = ACTIONS[action].done;
    }
    if (result && result.conversation) {
      this.conversation = { ...result.conversation, summary: result.conversation.summary || (this.conversation && this.conversation.summary) };
      this.onConversation(result.conversation);
    }
    this.render();
    await this.reload();
    if (cid === this.cid) this.focusAfter(action);
  }

  /** The clicked control was disabled and re-rendered while the action ran, so the focus is
   * gone: put it on what the pane offers now (the reply box after a reply; Retry after a
   * failure; else the first action button, or the heading when there is none). Never taken
   * from wherever the agent has moved it meanwhile. */
  focusAfter(action, { failed = false } = {}) {
    const active = document.activeElement;
    if (active && active !== document.body && !this.root.contains(active)) return;
    const root = this.root;
    const target = (failed && root.querySelector(".error button"))
      || (action === "reply" && root.querySelector("textarea.reply-input:not([disabled])"))
      || root.querySelector(".pane-actions button:not([disabled])")
      || root.querySelector(".pane-name");
    if (target) target.focus();
  }

  // ------------------------------------------------------------------ rendering
  render({ keepScroll = false } = {}) {
    const root = this.root;
    const oldLog = root.querySelector(".transcript");
    const wasAtBottom = !oldLog || oldLog.scrollHeight - oldLog.scrollTop - oldLog.clientHeight < 40;
    const oldScrollFromBottom = oldLog ? oldLog.scrollHeight - oldLog.scrollTop : 0;
    const active = document.activeElement;
    const focusedBox = active && active.classList.contains("reply-input")
      ? { start: active.selectionStart, end: active.selectionEnd } : null;
    // Likewise a focused action button (a live update re-renders the pane under it).
    const focusedAction = active && root.contains(active) && active.closest(".pane-actions")
      ? active.dataset.action : null;
    clear(root);
    root.classList.toggle("pane--empty", !this.cid);
    if (!this.cid) {
      root.append(h("div", { class: "empty-state" },
        h("p", { class: "empty-title", text: this.emptyTitle }),
        h("p", { class: "empty-text", text: this.emptyText })));
      return;
    }
    if (!this.conversation) {
      root.append(this.loading ? h("p", { class: "pane-loading", text: "Loading conversation…" }) : this.errorBox());
      return;
    }
    const c = this.conversation;
    root.append(this.header(c));
    const contact = this.contact(c);
    if (contact) root.append(contact);
    const windowNote = this.replyWindow(c);
    if (windowNote) root.append(windowNote);
    if (c.summary && c.summary.status === "ready" && c.summary.text) {
      root.append(h("section", { class: "summary", "aria-label": "Summary" },
        h("h3", { class: "summary-title", text: "Summary" }),
        h("p", { class: "summary-text", text: c.summary.text })));
    }
    if (this.error) root.append(this.errorBox());
    if (this.notice) root.append(h("p", { class: "notice", role: "status", text: this.notice }));
    const log = this.transcript(c);
    root.append(log);
    if (c.status === "handed_off") root.append(this.replyBox(focusedBox));
    else root.append(h("p", { class: "reply-hint", text: c.status === "closed"
      ? "This conversation is closed. Reopen it to reply."
      : "The AI is answering this conversation." }));
    if (keepScroll) log.scrollTop = log.scrollHeight - oldScrollFromBottom;
    else if (wasAtBottom) log.scrollTop = log.scrollHeight;
    if (focusedAction) {
      const again = root.querySelector(`.pane-actions [data-action="${focusedAction}"]`);
      if (again && !again.disabled) again.focus();
    }
  }

  header(c) {
    const actions = h("div", { class: "pane-actions" });
    const buttons = c.status === "handed_off" ? ["return-to-ai", "close"] : c.status === "closed" ? ["reopen"] : [];
    for (const action of buttons) {
      actions.append(h("button", {
        type: "button", class: action === "close" ? "btn btn-primary" : "btn",
        disabled: Boolean(this.sending), "data-action": action,
        onclick: () => this.run(action),
      }, this.sending === action ? `${ACTIONS[action].label}…` : ACTIONS[action].label));
    }
    return h("header", { class: "pane-header" },
      h("div", { class: "pane-title" },
        h("h2", { class: "pane-name", tabindex: "-1", text: c.display_name }),
        h("div", { class: "pane-meta" },
          h("span", { class: `badge badge-${c.status}`, text: STATUS_LABELS[c.status] || c.status }),
          h("span", { class: "channel", text: channelLabel(c.channel) }),
          c.reason ? h("span", { class: "pane-reason", text: c.reason }) : null)),
      actions);
  }

  // WhatsApp only lets a business send free-form replies within 24 hours of the visitor's
  // last message: say so before the agent types, not only when a reply is refused.
  replyWindow(c) {
    if (c.channel !== "whatsapp" || c.status !== "handed_off") return null;
    const ends = c.reply_window_ends_at ? Date.parse(c.reply_window_ends_at) : NaN;
    if (ends > Date.now()) {
      return h("p", { class: "reply-window reply-window-open", role: "note",
        text: `WhatsApp reply window open until ${formatMessageTime(c.reply_window_ends_at, Date.now(), this.timezone)}.` });
    }
    return h("p", { class: "reply-window reply-window-closed", role: "note",
      text: "WhatsApp's 24-hour reply window has closed: the visitor has to write first." });
  }

  contact(c) {
    const fields = [["Name", c.contact && c.contact.name], ["E-mail", c.contact && c.contact.email], ["Phone", c.contact && c.contact.phone]]
      .filter(([, v]) => v);
    if (!fields.length) return null;
    return h("dl", { class: "contact", "aria-label": "Contact details" },
      fields.map(([label, value]) => h("div", { class: "contact-field" },
        h("dt", { text: label }), h("dd", { text: value, "data-field": label.toLowerCase() }))));
  }

  transcript(c) {
    // Re-rendered whole on every change, so not a live region (it would re-read everything):
    // new visitor messages are announced through the page's announcer instead.
    const log = h("ol", { class: "transcript", "aria-label": "Messages" });
    if (this.before) {
      log.append(h("li", { class: "load-earlier" },
        h("button", { type: "button", class: "btn btn-link", onclick: () => this.loadEarlier() }, "Load earlier messages")));
    }
    if (!this.messages.length) log.append(h("li", { class: "transcript-empty", text: "No messages yet." }));
    const now = Date.now();
    for (const m of this.messages) {
      const who = m.sender === "visitor" ? c.display_name
        : m.sender === "ai" ? "AI"
        : m.sender === "agent" ? (m.sender_name || "Agent")
        : "System";
      log.append(h("li", { class: `msg msg-${m.sender}`, "data-message-id": m.message_id, "data-sender": m.sender },
        h("div", { class: "msg-meta" },
          h("span", { class: "msg-who", text: who }),
          h("time", { class: "msg-time", datetime: m.created_at, text: formatMessageTime(m.created_at, now, this.timezone) }),
          deliveredMark(m)),
        h("p", { class: "msg-text", text: m.text }),
        deliveryNote(m)));
    }
    return log;
  }

  replyBox(refocus) {
    const input = h("textarea", {
      class: "reply-input", placeholder: "Type your reply...", "aria-label": "Reply to the visitor",
      rows: "3", value: this.draft,
    });
    const send = h("button", { type: "submit", class: "btn btn-primary", "data-action": "send" },
      this.sending === "reply" ? "Sending…" : "Send");
    const sync = () => {
      this.draft = input.value;
      send.disabled = Boolean(this.sending) || !input.value.trim();
    };
    input.addEventListener("input", sync);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        submit();
      }
    });
    const submit = () => {
      const text = input.value.trim();
      if (!text || this.sending) return;
      this.run("reply", text);
    };
    const form = h("form", { class: "reply", "aria-label": "Reply", onsubmit: (e) => { e.preventDefault(); submit(); } },
      input, send);
    input.disabled = this.sending === "reply";
    sync();
    // Re-rendered while the agent types (a message arrived): keep focus and caret.
    if (refocus) queueMicrotask(() => {
      input.focus();
      input.setSelectionRange(refocus.start, refocus.end);
    });
    return form;
  }

  errorBox() {
    const err = this.error || { text: "Something went wrong." };
    return h("div", { class: "error", role: "alert" },
      h("span", { text: err.text }),
      err.retry ? h("button", { type: "button", class: "btn btn-small", onclick: err.retry }, "Retry") : null);
  }
}

const DELIVERED_MARKS = { delivered: "✓ Delivered", read: "✓✓ Read" };

/** Beside a reply's time: that the visitor's app received it, or showed it (quiet). */
function deliveredMark(m) {
  const text = DELIVERED_MARKS[m.delivery];
  return text ? h("span", { class: "msg-delivery", "data-delivery": m.delivery, text }) : null;
}

/** Under a message: a failed delivery (red), or an AI answer that was never sent because it
 * came after the conversation left the AI (quiet: nothing went wrong, the team has it). */
function deliveryNote(m) {
  if (m.delivery === "failed") {
    return h("p", { class: "msg-error", role: "note", text: `Not delivered: ${m.delivery_error || "delivery failed"}` });
  }
  if (m.delivery === "not_sent") {
    return h("p", { class: "msg-note", role: "note",
      text: "Not sent: this answer came after the conversation was handed to the team." });
  }
  return null;
}
