// The reply pane: one conversation's header, contact, Summary banner, transcript, actions
// and reply box. Shared by the Handoff tab and the Conversations table.

import { api, ApiError, newCommandId, replyMaxChars, signedInAgentId } from "./api.js";
import { h, clear, announce } from "./dom.js";
import { Drafts } from "./drafts.js";
import { paneClaim, replyGuard } from "./claim.js";
import { presence } from "./presence.js";
import { handoffHistory } from "./history.js";
import { channelLabel, formatMessageTime } from "./format.js";
import { newestSummary, summaryBanner, SummaryRefresh } from "./summary.js";
import { atWindowClose, templateOnlyNote } from "./window.js";

// The drafts of every pane on the page (one store: a draft typed in the Handoff tab is there
// in Conversations too).
const drafts = new Drafts(signedInAgentId);

// The latest 100 messages first, earlier ones on demand; window.HANDOFF_MESSAGE_PAGE_SIZE overrides.
function messagePageSize() {
  const n = Number(window.HANDOFF_MESSAGE_PAGE_SIZE);
  return Number.isInteger(n) && n > 0 && n <= 500 ? n : 100;
}

// A transcript that holds fewer messages than its conversation counts (the read model not
// there yet) is fetched again this many times, this far apart (ms), before it is shown.
const TRANSCRIPT_RETRY_MS = [150, 300, 600, 1200];

export const STATUS_LABELS = { handed_off: "Needs reply", active: "Active", closed: "Closed" };
const ACTIONS = {
  "return-to-ai": { label: "Return to AI", done: "Returned to AI." },
  close: { label: "Close", done: "Conversation closed." },
  reopen: { label: "Reopen", done: "Conversation reopened." },
  "mark-seen": { label: "Mark as seen", done: "Marked as seen." },
  take: { label: "Take", done: "You're handling this conversation." },
  "take-over": { label: "Take over", done: "You took over this conversation." },
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Characters as the server counts them (an emoji is one). */
const charCount = (text) => Array.from(text).length;

const number = (n) => n.toLocaleString("en-US");

/** "The reply is too long: at most 4,096 characters." (the gateway's words too) */
export function tooLongText(limit) {
  return `The reply is too long: at most ${number(limit)} characters.`;
}

/** Of two copies of one conversation (a live update, a fetch), the later one, with the
 * summary of its current handoff that is furthest along. */
export function fresherConversation(known, fetched) {
  if (!known) return fetched;
  if (!fetched) return known;
  const k = Date.parse(known.updated_at);
  const f = Date.parse(fetched.updated_at);
  const pick = k > f || (k === f && known.message_count > fetched.message_count) ? known : fetched;
  const summaries = [pick.summary, known.summary, fetched.summary]
    .filter((s) => s && (!pick.handoff_id || s.handoff_id === pick.handoff_id));
  return { ...pick, summary: newestSummary(summaries) };
}

export class ReplyPane {
  constructor(root, { chatbotId, timezone, onConversation, onCommand, awaitResult, emptyTitle, emptyText, messageCountOf }) {
    this.root = root;
    this.emptyTitle = emptyTitle || "Select a handoff to reply";
    this.emptyText = emptyText || "The visitor's messages and summary appear here.";
    this.chatbotId = chatbotId;
    this.timezone = timezone;
    this.onConversation = onConversation || (() => {});
    this.awaitResult = awaitResult; // (commandId) -> {result: Promise<CommandResult>, cancel()}
    this.onCommand = onCommand || (() => {}); // (action, conversation id) as a command is sent
    // (conversation id) -> the message count its row shows: the pane never shows fewer.
    this.messageCountOf = messageCountOf || (() => 0);
    this.cid = null;
    this.conversation = null;
    this.messages = [];
    this.handoffs = [];
    this.before = null;
    this.loading = false;
    this.error = null; // {text, retry?}
    this.notice = null;
    this.sending = null; // the action in flight
    this.draft = "";
    this.replyNote = null; // beside the reply box: why it refused or cut the text, in words
    this.loaded = false; // the transcript was fetched (until then live updates only gather)
    this.promised = 0; // the most messages a row or update said this conversation has
    this.incomplete = false;
    this.loadSeq = 0;
    this.summaryRefresh = new SummaryRefresh(() => { if (this.loaded) this.render(); });
    this.render();
  }

  async open(cid) {
    if (cid === this.cid && this.conversation) return;
    this.cid = cid;
    this.conversation = null;
    this.messages = [];
    this.handoffs = []; // the conversation's handoffs (history.js), from its fetch
    this.before = null;
    this.error = null;
    this.notice = null;
    this.replyNote = null;
    this.loaded = false;
    this.incomplete = false;
    this.summaryRefresh.reset(null);
    this.promised = cid ? Number(this.messageCountOf(cid)) || 0 : 0;
    this.draft = cid ? drafts.get(this.chatbotId, cid) : "";
    presence.view(this.chatbotId, cid); // the others see who has it open
    if (!cid) {
      this.render();
      return;
    }
    this.loading = true;
    this.render();
    await this.reload();
  }

  /** Fetch the conversation (on open, after a resync or a command). Live updates that come
   * while it is on its way are kept and merged with it (messages by id, the later copy of
   * the conversation); until the first fetch is in, the pane shows that it is loading, never
   * a transcript with fewer messages than the row promised. A fetch with fewer messages
   * than the conversation counts is repeated a few times first. */
  async reload() {
    const cid = this.cid;
    if (!cid) return;
    const mine = ++this.loadSeq;
    try {
      for (let attempt = 0; ; attempt += 1) {
        const { data } = await api.conversation(this.chatbotId, cid, { limit: messagePageSize() });
        if (mine !== this.loadSeq || cid !== this.cid) return;
        this.conversation = fresherConversation(this.conversation, data.conversation);
        this.mergeMessages(data.messages.items);
        if (data.handoffs) this.handoffs = data.handoffs;
        if (this.before === null) this.before = data.messages.next_cursor || null;
        this.promised = Math.max(this.promised, data.conversation.message_count || 0);
        if (this.complete() || attempt >= TRANSCRIPT_RETRY_MS.length) break;
        await sleep(TRANSCRIPT_RETRY_MS[attempt]);
        if (mine !== this.loadSeq || cid !== this.cid) return;
      }
      this.incomplete = !this.complete();
      this.loaded = true;
      this.loading = false;
      this.render();
    } catch (err) {
      if (cid !== this.cid) return;
      this.loading = false;
      this.error = { text: err.message };
      this.render();
    }
  }

  /** Whether the pane holds every message the conversation is known to have (earlier pages
   * not loaded yet count as held: they come on demand). */
  complete() {
    if (this.before) return true;
    const counted = Math.max(this.promised, (this.conversation && this.conversation.message_count) || 0);
    return this.messages.length >= counted;
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
    if (update.row_upserted && update.row_upserted.conversation_id === this.cid) {
      this.promised = Math.max(this.promised, update.row_upserted.message_count || 0);
    }
    if (update.conversation && update.conversation.conversation_id === this.cid) {
      this.conversation = { ...update.conversation, summary: update.conversation.summary || (this.conversation && this.conversation.summary) };
      this.promised = Math.max(this.promised, update.conversation.message_count || 0);
      changed = true;
      // Handed off again while open: the history (history.js) comes with a fresh fetch.
      const hid = update.conversation.handoff_id;
      if (this.loaded && hid && this.handoffs.length && !this.handoffs.some((x) => x.handoff_id === hid)) this.reload();
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
    if (this.incomplete && this.complete()) this.incomplete = false;
    if (changed && this.loaded) this.render();
  }

  applyConversation(conversation) {
    if (conversation && conversation.conversation_id === this.cid) {
      this.conversation = { ...conversation, summary: conversation.summary || (this.conversation && this.conversation.summary) };
      if (this.loaded) this.render();
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
    this.replyNote = null;
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
      this.refused(action, err.message, retry);
      return;
    }
    this.sending = null;
    if (cid !== this.cid) return;
    if (result && result.ok === false) {
      this.refused(action, result.error || "The action was refused.");
      return;
    }
    if (action === "reply") {
      this.draft = "";
      drafts.remove(this.chatbotId, cid);
      this.notice = null;
    } else {
      this.notice = ACTIONS[action].done;
    }
    if (result && result.conversation) {
      // The answer is the conversation as the command left it; a live update of what came
      // since (a visitor's message) may have overtaken it: the later of the two stays.
      this.conversation = fresherConversation(this.conversation, result.conversation);
      this.onConversation(this.conversation);
    }
    this.render();
    await this.reload();
    if (cid === this.cid) this.focusAfter(action);
  }

  /** A refused or failed action: a reply's reason beside the reply box (the draft stays),
   * other actions' at the top of the pane. */
  refused(action, text, retry) {
    if (action === "reply") {
      this.replyNote = { text, retry };
      this.render();
    } else {
      this.showError(text, retry);
    }
    this.focusAfter(action, { failed: true });
  }

  /** The clicked control was disabled and re-rendered while the action ran, so the focus is
   * gone: put it on what the pane offers now (the reply box after a reply; Retry after a
   * failure; else the first action button, or the heading when there is none). Never taken
   * from wherever the agent has moved it meanwhile. */
  focusAfter(action, { failed = false } = {}) {
    const active = document.activeElement;
    if (active && active !== document.body && !this.root.contains(active)) return;
    const root = this.root;
    const target = (failed && root.querySelector(".error button, .reply-error button"))
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
    if (!this.conversation || !this.loaded) {
      root.append(this.loading || (this.conversation && !this.error)
        ? h("p", { class: "pane-loading", role: "status", text: "Loading conversation…" }) : this.errorBox());
      return;
    }
    const c = this.conversation;
    root.append(this.header(c), presence.paneElement(this.chatbotId, this.cid));
    const contact = this.contact(c);
    if (contact) root.append(contact);
    const handoffs = handoffHistory(this.handoffs, this.timezone);
    if (handoffs) root.append(handoffs);
    const windowNote = this.replyWindow(c);
    if (windowNote) root.append(windowNote);
    const summary = summaryBanner(c, this.messages, this.summaryRefresh, { chatbotId: this.chatbotId, timezone: this.timezone });
    const afterClose = this.newAfterClose(c);
    if (afterClose) root.append(afterClose);
    if (this.error) root.append(this.errorBox());
    if (this.notice) root.append(h("p", { class: "notice", role: "status", text: this.notice }));
    if (this.incomplete) {
      root.append(h("p", { class: "notice transcript-incomplete", role: "status",
        text: "Some messages have not arrived yet; they appear here as they do." }));
    }
    const log = this.transcript(c);
    // The Summary banner is the transcript's first item: it scrolls away with the messages.
    if (summary) log.prepend(h("li", { class: "transcript-summary" }, summary));
    root.append(log);
    if (c.status === "handed_off") root.append(this.replyBox(focusedBox));
    else {
      root.append(h("p", { class: "reply-hint", text: c.status === "closed"
        ? "This conversation is closed. Reopen it to reply."
        : "The AI is answering this conversation." }));
      if (this.draft.trim()) root.append(this.keptDraft(c));
    }
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
          c.reason ? h("span", { class: "pane-reason", text: c.reason }) : null,
          paneClaim(this, c))),
      actions);
  }

  // WhatsApp only lets a business send free-form replies within 24 hours of the visitor's
  // last message: say so before the agent types, not only when a reply is refused.
  replyWindow(c) {
    clearTimeout(this.windowTimer);  // the pane says "closed" by itself when the window closes
    if (c.channel !== "whatsapp" || c.status !== "handed_off") return null;
    this.windowTimer = atWindowClose(c, () => this.render({ keepScroll: true }));
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

  /** A closed conversation the visitor wrote to again: say so, with how many messages
   * and a way to mark them seen (Reopen, in the header, also does). */
  newAfterClose(c) {
    const n = c.status === "closed" ? c.new_after_close || 0 : 0;
    if (!n) return null;
    return h("div", { class: "after-close", role: "note" },
      h("p", { class: "after-close-text",
        text: `New message after close: the visitor wrote ${n === 1 ? "a message" : `${n} messages`} after this conversation was closed. It stays closed until someone reopens it.` }),
      h("button", { type: "button", class: "btn btn-small", "data-action": "mark-seen", disabled: Boolean(this.sending),
        onclick: () => this.run("mark-seen") }, this.sending === "mark-seen" ? "Mark as seen…" : "Mark as seen"));
  }

  /** The agent's unsent reply, kept when the reply box went away (someone closed the
   * conversation or returned it to the AI): read-only, to copy or discard; the box gets it
   * back when the conversation is handed off again. */
  keptDraft(c) {
    const why = c.status === "closed"
      ? "This conversation was closed before your reply was sent; your draft is kept."
      : "The AI has this conversation now; your draft is kept.";
    const text = h("textarea", { class: "draft-text", readonly: "readonly", rows: "3", value: this.draft,
      "aria-label": "Your unsent reply" });
    const copy = async () => {
      try {
        await navigator.clipboard.writeText(this.draft);
      } catch {
        text.select();
        document.execCommand("copy");
      }
      announce("Draft copied.");
      copyButton.textContent = "Copied";
    };
    const copyButton = h("button", { type: "button", class: "btn btn-small", "data-action": "copy-draft", onclick: copy }, "Copy draft");
    return h("section", { class: "draft-kept", "aria-label": "Unsent reply" },
      h("p", { class: "draft-note", role: "note", text: why }),
      text,
      h("div", { class: "draft-actions" },
        copyButton,
        h("button", { type: "button", class: "btn btn-small btn-link", "data-action": "discard-draft", onclick: () => {
          this.draft = "";
          drafts.remove(this.chatbotId, this.cid);
          this.render();
        } }, "Discard draft")));
  }

  replyBox(refocus) {
    const limit = replyMaxChars();
    const input = h("textarea", {
      class: "reply-input", placeholder: "Type your reply...", "aria-label": "Reply to the visitor",
      rows: "3", value: this.draft, maxlength: limit ? String(limit) : null,
      "aria-describedby": "reply-count reply-error",
    });
    const send = h("button", { type: "submit", class: "btn btn-primary", "data-action": "send" },
      this.sending === "reply" ? "Sending…" : "Send");
    const counter = h("span", { class: "reply-count", id: "reply-count" });
    const note = h("p", { class: "reply-error", id: "reply-error", role: "alert" });
    const cid = this.cid;
    // Another agent handles it: typing first asks "Reply anyway" or "Take over" (claim.js).
    const guard = replyGuard(this, this.conversation, () => sync());
    const tooLong = () => limit && charCount(input.value) > limit;
    const showNote = () => {
      const text = tooLong() ? tooLongText(limit) : this.replyNote && this.replyNote.text;
      clear(note).append(text || "");
      if (text && !tooLong() && this.replyNote && this.replyNote.retry) {
        note.append(" ", h("button", { type: "button", class: "btn btn-small", onclick: this.replyNote.retry }, "Retry"));
      }
      note.hidden = !text;
    };
    const sync = () => {
      this.draft = input.value;
      const n = charCount(input.value);
      counter.textContent = limit ? `${number(n)} / ${number(limit)}` : number(n);
      counter.classList.toggle("reply-count--over", Boolean(limit && n > limit));
      send.disabled = Boolean(this.sending) || !input.value.trim() || Boolean(tooLong()) || guard.blocked();
      showNote();
    };
    let pasteCut = false;
    input.addEventListener("input", () => {
      // The agent is changing the text: an earlier refusal no longer applies (a failure to
      // send stays, with its Retry); a paste cut to fit says so.
      if (pasteCut) this.replyNote = { text: `The pasted text was cut to fit: at most ${number(limit)} characters.` };
      else if (this.replyNote && !this.replyNote.retry) this.replyNote = null;
      pasteCut = false;
      sync();
      drafts.set(this.chatbotId, cid, input.value);
      presence.typing(this.chatbotId, cid);
      guard.show();
    });
    input.addEventListener("focus", () => guard.show());
    // The box takes no more than the limit (maxlength); a paste longer than the room left
    // is cut by the browser.
    input.addEventListener("paste", (event) => {
      if (!limit || !event.clipboardData) return;
      const room = limit - (input.value.length - (input.selectionEnd - input.selectionStart));
      pasteCut = event.clipboardData.getData("text").length > room;
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        submit();
      }
    });
    const submit = () => {
      const text = input.value.trim();
      if (!text || this.sending || tooLong()) return;
      if (guard.blocked()) return guard.show(); // someone else handles it: Reply anyway or Take over first
      this.run("reply", text);
    };
    const form = h("form", { class: "reply", "aria-label": "Reply", onsubmit: (e) => { e.preventDefault(); submit(); } },
      guard.el, input, h("div", { class: "reply-side" }, counter, send), note);
    const templateOnly = templateOnlyNote(this.conversation);  // WhatsApp's window has closed
    if (templateOnly) {
      form.prepend(templateOnly);
      input.setAttribute("aria-describedby", "reply-template-only reply-count reply-error");
    }
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
