// The main area for a route: the Handoff, Conversations or Tools view, with the reply pane
// beside the first two, and how they follow the chatbot store.

import { ConversationsView } from "./conversations.js";
import { h, clear } from "./dom.js";
import { AGENT_ZONE, chatbotTimeTitle } from "./format.js";
import { HandoffView } from "./handoff.js";
import { ReplyPane } from "./pane.js";
import { routeHash } from "./router.js";
import { ToolsView } from "./tools.js";

export class Screen {
  /** awaitResult and onCommand go to the reply pane; onHandoffSaved(chatbot id, enabled, settings version)
   * after the Tools view saved the Human Handoff switch. */
  constructor({ store, router, awaitResult, onCommand, onHandoffSaved }) {
    Object.assign(this, { store, router, awaitResult, onCommand, onHandoffSaved });
    this.main = document.getElementById("view");
    this.view = null;
    this.pane = null;
    // Times show in the agent's zone; hovering one (the transcript's, the table's, a row's)
    // shows it in the chatbot's zone too. Titled when pointed at, so every <time> gets one
    // whoever rendered it.
    const titled = (event) => {
      const el = event.target instanceof Element ? event.target.closest("time[datetime]") : null;
      const zone = this.store.current && this.store.current.timezone;
      if (el && zone) el.title = chatbotTimeTitle(el.dateTime, zone);
    };
    this.main.addEventListener("mouseover", titled);
    this.main.addEventListener("focusin", titled);
  }

  show(route, previous) {
    const sameView = previous && previous.bot === route.bot && previous.tab === route.tab && this.view;
    if (!sameView) {
      this.mount(route);
      return;
    }
    if (route.tab === "conversations") this.view.setFilter(route.params.get("status") || "all", route.params.get("q") || "");
    this.select(route.params.get("c"));
  }

  mount({ bot, tab, params }) {
    const main = this.main;
    const state = this.store.current;
    const go = (hash, options) => this.router.go(hash, options);
    clear(main);
    this.pane = null;
    const select = (cid) => {
      const p = new URLSearchParams(this.router.route.params);
      p.set("c", cid);
      go(routeHash(bot, tab, { params: p }));
    };
    if (tab === "handoff") {
      this.view = new HandoffView(main, {
        store: state, chatbotId: bot, onSelect: select,
        onLoadMore: async () => { if (await this.store.loadMore()) this.stateChanged(); },
      });
      this.pane = this.newPane(bot, this.view.paneEl);
    } else if (tab === "conversations") {
      this.view = new ConversationsView(main, {
        chatbotId: bot, status: params.get("status") || "all", q: params.get("q") || "",
        onSelect: select,
        onFilter: (status, q) => {
          const p = new URLSearchParams();
          if (status !== "all") p.set("status", status);
          if (q) p.set("q", q);
          go(routeHash(bot, "conversations", { params: p }), { replace: true });
        },
      });
      this.pane = this.newPane(bot, this.view.paneEl, {
        emptyTitle: "Select a conversation", emptyText: "Its messages, contact details and summary appear here." });
    } else {
      this.view = new ToolsView(main, {
        chatbotId: bot,
        onSaved: (s, version) => {
          // The form saves the chatbot's timezone too: hover titles use the new one at once.
          if (s.timezone && this.store.isCurrent(bot)) this.store.current.timezone = s.timezone;
          this.onHandoffSaved(bot, s.enabled, version);
        },
      });
    }
    this.select(params.get("c"));
    main.focus({ preventScroll: true });
  }

  newPane(chatbotId, el, texts = {}) {
    return new ReplyPane(el, {
      ...texts,
      chatbotId,
      timezone: AGENT_ZONE, // the zone its times show in
      onConversation: (c) => { if (this.view instanceof ConversationsView) this.view.applyConversation(c); },
      onCommand: this.onCommand,
      awaitResult: this.awaitResult,
      // What the row on screen says the conversation holds: the pane never shows fewer.
      messageCountOf: (cid) => {
        const list = this.view instanceof ConversationsView ? this.view.items : this.store.current.rows;
        const found = list.find((x) => x.conversation_id === cid);
        return found ? found.message_count : 0;
      },
    });
  }

  select(cid) {
    if (!this.pane) return;
    this.view.select(cid || null);
    this.pane.open(cid || null);
    document.body.classList.toggle("pane-open", Boolean(cid));
  }

  showNoChatbots() {
    clear(this.main).append(h("div", { class: "empty-state" },
      h("p", { class: "empty-title", text: "No chatbots yet" }),
      h("p", { class: "empty-text", text: "Ask an administrator to add you to a chatbot." })));
  }

  // ---------------------------------------------------------------- the store changed
  /** The Handoff view shows the store's rows and stats. */
  stateChanged() {
    if (this.view instanceof HandoffView) this.view.render();
  }

  statsChanged() {
    if (this.view instanceof HandoffView) this.view.renderStats();
  }

  /** Reloaded from a snapshot: anything might have been missed, the open transcript too. */
  reloaded() {
    this.stateChanged();
    if (this.pane && this.pane.cid) this.pane.reload();
  }

  updated(update) {
    this.stateChanged();
    if (this.view instanceof ConversationsView && update.conversation) this.view.applyConversation(update.conversation);
    if (this.pane) this.pane.applyUpdate(update);
  }

  /** Waiting times tick while the page is open. */
  tick() {
    if (this.view && this.view.tick) this.view.tick();
  }
}
