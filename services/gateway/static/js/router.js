// Hash routing between the views: #/<chatbot>/<tab>[/<sub>][?params]. Every route is made
// canonical (a chatbot of the agent, a tab it has) and the last chatbot is remembered.

export const TAB_NAMES = { conversations: "Conversations", handoff: "Handoff", tools: "Tools" };
const LAST_CHATBOT = "handoff.lastChatbot";

export function parseRoute(hash) {
  const raw = (hash || "").replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  const [bot = "", tab = "", sub = ""] = path.split("/").map((p) => decodeURIComponent(p));
  return { bot, tab, sub, params: new URLSearchParams(query) };
}

export function routeHash(bot, tab, { sub = "", params = null } = {}) {
  let hash = `#/${encodeURIComponent(bot)}/${tab}` + (sub ? `/${sub}` : "");
  const q = params ? params.toString() : "";
  return q ? `${hash}?${q}` : hash;
}

export class Router {
  /** onRoute(route, previous) after every navigation; onNoChatbots() when there is nowhere to go. */
  constructor({ chatbots, onRoute, onNoChatbots }) {
    this.chatbots = chatbots;
    this.onRoute = onRoute;
    this.onNoChatbots = onNoChatbots;
    this.route = null; // { bot, tab, sub, params }
  }

  start() {
    window.addEventListener("hashchange", () => this.resolve());
    window.addEventListener("popstate", () => this.resolve());
    this.resolve();
  }

  go(hash, { replace = false } = {}) {
    if (location.hash === hash) return;
    if (replace) history.replaceState(null, "", hash);
    else history.pushState(null, "", hash);
    this.resolve();
  }

  resolve() {
    const r = parseRoute(location.hash);
    const chatbots = this.chatbots;
    const bot = chatbots.get(r.bot) || chatbots.get(localStorage.getItem(LAST_CHATBOT)) || chatbots.list[0];
    if (!bot) return this.onNoChatbots();
    let tab = TAB_NAMES[r.tab] ? r.tab : (bot.handoff_enabled ? "handoff" : "conversations");
    if (tab === "handoff" && !bot.handoff_enabled) tab = "conversations";
    const sub = tab === "tools" ? (r.sub || "human-handoff") : "";
    const params = new URLSearchParams(r.params);
    const canonical = routeHash(bot.chatbot_id, tab, { sub, params });
    if (canonical !== location.hash) history.replaceState(null, "", canonical);
    localStorage.setItem(LAST_CHATBOT, bot.chatbot_id);

    const previous = this.route;
    this.route = { bot: bot.chatbot_id, tab, sub, params };
    this.onRoute(this.route, previous);
  }
}
