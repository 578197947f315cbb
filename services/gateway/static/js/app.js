// The agent dashboard's composition root: it signs the page in (/api/me), builds the parts
// and wires them together; each part owns its own state and is handed what it needs.
//   router.js    hash routing between the views
//   store.js     the chatbot on screen: rows, stats, feed order (seq/epoch)
//   alerting.js  which handoffs alert, once (alerts.js makes the sound and notification)
//   results.js   command results that come over the websocket
//   views.js     the main area (views and reply pane); topbar.js the header

import { api, onUnauthorized, setCsrfToken, setLimits } from "./api.js";
import { HandoffAlerting } from "./alerting.js";
import { Alerts } from "./alerts.js";
import { Chatbots } from "./chatbots.js";
import { h, clear, announce } from "./dom.js";
import { LiveConnection, updateFrames } from "./live.js";
import { presence } from "./presence.js";
import { CommandResults } from "./results.js";
import { Router, routeHash } from "./router.js";
import { ChatbotStore } from "./store.js";
import { TopBar } from "./topbar.js";
import { Screen } from "./views.js";

async function main() {
  let me;
  try {
    me = (await api.me()).data;
  } catch (err) {
    if (err.status === 401) return; // onUnauthorized already went to the login page
    clear(document.getElementById("view")).append(h("div", { class: "error", role: "alert", text: err.message }));
    return;
  }
  setCsrfToken(me.csrf_token, me.agent.agent_id);
  setLimits(me.limits);
  const chatbots = new Chatbots(me.chatbots);
  const results = new CommandResults();
  // A deliberately small, read-only hook for tests and the console (no secrets, no state
  // to change): how many command results the page still waits for.
  window.handoffDashboard = Object.freeze({ waitingCommandResults: () => results.waitingCount });
  const alerts = new Alerts({ isMuted: () => Boolean(me.agent.muted) });
  const store = new ChatbotStore({
    onSnapshot: () => screen.reloaded(),
    onStats: () => { screen.statsChanged(); topbar.updateTitle(); },
    onUpdate: (state, update) => {
      screen.updated(update);
      if (update.settings_changed) refreshChatbots();
    },
    onProblem: showSyncProblem,
  });
  const alerting = new HandoffAlerting({
    alerts, chatbots, chatbotOnScreen: () => store.current && store.current.chatbotId });
  const router = new Router({
    chatbots,
    onRoute: (route, previous) => {
      if (!store.isCurrent(route.bot)) store.show(route.bot);
      screen.show(route, previous);
      topbar.renderNav();
      topbar.updateTitle();
    },
    onNoChatbots: () => screen.showNoChatbots(),
  });
  const screen = new Screen({
    store, router,
    awaitResult: (commandId) => results.await(commandId),
    onCommand: (action, cid) => alerting.commandSent(action, cid),
    onHandoffSaved: (id, enabled, version) => chatbotChanged(id, enabled, undefined, version),
  });
  const topbar = new TopBar({
    chatbots, route: () => router.route, stats: () => (store.current ? store.current.stats : null) });

  /** A chatbot's name or Handoff switch changed (here, in Tools, or anywhere: "settings"). */
  function chatbotChanged(id, enabled, name, version) {
    if (!chatbots.set(id, enabled, name, version) || !router.route) return;
    if (router.route.bot === id && router.route.tab === "handoff" && !enabled) {
      router.go(routeHash(id, "conversations"), { replace: true });
      return;
    }
    topbar.renderNav();
    topbar.updateTitle();
  }

  async function refreshChatbots() {
    try {
      const { data } = await api.me();
      for (const c of data.chatbots) chatbotChanged(c.chatbot_id, c.handoff_enabled, c.name, c.settings_version);
    } catch (err) {
      console.warn(err);
    }
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "subscribed":
        store.subscribed(frame.chatbot_id);
        alerting.subscribed(frame);
        presence.subscribed(frame.chatbot_id); // a new socket: tell it what this page shows
        break;
      case "presence":
        presence.apply(frame);
        break;
      case "update":
      case "updates":
        for (const single of updateFrames(frame)) {
          alerting.update(single); // first: every chatbot of the agent alerts, on screen or not
          store.update(single);
        }
        break;
      case "command_result":
        results.deliver(frame.result);
        break;
      case "settings":
        chatbotChanged(frame.chatbot_id, frame.handoff_enabled, frame.name, frame.settings_version);
        break;
      case "error":
        if (frame.code === 403) announce(frame.error);
        else console.warn("live error", frame.error);
        break;
      default:
        break;
    }
  }

  const proto = location.protocol === "https:" ? "wss" : "ws";
  const live = new LiveConnection({
    url: `${proto}://${location.host}/ws`, onFrame, onStatus: (s) => topbar.setConnection(s), onUnauthorized });
  topbar.renderAccount(me.agent, {
    alerts, live,
    onPick: (id) => router.go(routeHash(id, router.route.tab === "tools" ? "tools" : "handoff")),
  });
  // Every chatbot of the agent, so a handoff in any of them alerts (sent on every connect).
  for (const c of chatbots.list) live.subscribe(c.chatbot_id);
  presence.attach(live, me.agent.agent_id);
  live.start();
  // Browsers only play sound after a user gesture: unlock audio on the first one.
  document.addEventListener("pointerdown", () => alerts.unlockAudio(), { once: true });
  document.addEventListener("keydown", () => alerts.unlockAudio(), { once: true });
  router.start();
  setInterval(() => screen.tick(), 10000);
}

function showSyncProblem(text) {
  const el = document.getElementById("sync-error");
  el.textContent = text;
  el.hidden = !text;
}

main();
