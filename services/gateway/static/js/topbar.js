// The top bar: chatbot picker and tabs (with the open count), the page title, the
// connection state, and the agent's own buttons (mute, desktop notifications, log out).

import { api, ApiError } from "./api.js";
import { h, clear, announce } from "./dom.js";
import { TAB_NAMES, routeHash } from "./router.js";

export class TopBar {
  /** route() is the current route, stats() the stats of the chatbot on screen (or null). */
  constructor({ chatbots, route, stats }) {
    this.chatbots = chatbots;
    this.route = route;
    this.stats = stats;
    this.navPending = false;
  }

  renderNav() {
    const route = this.route();
    const chatbots = this.chatbots.list;
    const picker = document.getElementById("chatbot-picker");
    clear(picker);
    for (const c of chatbots) {
      picker.append(h("option", { value: c.chatbot_id, selected: c.chatbot_id === route.bot, text: c.name }));
    }
    picker.hidden = chatbots.length < 2;
    const bot = this.chatbots.get(route.bot);
    document.getElementById("chatbot-name").textContent = bot.name;
    document.getElementById("chatbot-name").hidden = chatbots.length >= 2;
    const tabs = document.getElementById("tabs");
    clear(tabs);
    // The Handoff tab sits between Conversations and Tools, only while the tool is on.
    const visible = ["conversations", ...(bot.handoff_enabled ? ["handoff"] : []), "tools"];
    const stats = this.stats();
    for (const tab of visible) {
      const current = tab === route.tab;
      const link = h("a", { href: routeHash(bot.chatbot_id, tab), class: "tab" + (current ? " active" : ""),
        "data-tab": tab, "aria-current": current ? "page" : null }, TAB_NAMES[tab]);
      if (tab === "handoff" && stats && stats.open) {
        link.append(h("span", { class: "tab-count", "aria-label": `${stats.open} open`, text: String(stats.open) }));
      }
      // Closed conversations the visitor wrote to again, that no agent has seen yet.
      const after = stats && stats.closed_with_new_messages;
      if (tab === "conversations" && after) {
        link.append(h("span", { class: "tab-count tab-count-new", title: "New message after close",
          "aria-label": `${after} closed with a new message`, text: String(after) }));
      }
      tabs.append(link);
    }
  }

  /** The title (open count first) now, the nav once the current task is done. */
  updateTitle() {
    const route = this.route();
    if (!route) return;
    const bot = this.chatbots.get(route.bot);
    const stats = this.stats();
    const open = stats ? stats.open : 0;
    document.title = `${open ? `(${open}) ` : ""}${TAB_NAMES[route.tab]} — ${bot ? bot.name : "Handoff"}`;
    if (this.navPending) return;
    this.navPending = true;
    queueMicrotask(() => { this.navPending = false; this.renderNav(); });
  }

  setConnection(status) {
    const el = document.getElementById("connection");
    el.dataset.state = status;
    el.textContent = status === "live" ? "Live" : status === "connecting" ? "Connecting…" : "Reconnecting…";
    el.hidden = status === "live";
    document.body.classList.toggle("offline", status !== "live");
  }

  /** The agent's name and buttons. onPick(chatbot id) for the picker; live is the page's
   * LiveConnection (stopped while logging out). */
  renderAccount(agent, { alerts, live, onPick }) {
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
      live.stop();
      try {
        await api.logout();
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 401) {
          alert(err.message);
          live.start();
          return;
        }
      }
      location.assign("/login");
    };
    document.getElementById("chatbot-picker").onchange = (e) => onPick(e.target.value);
  }
}
