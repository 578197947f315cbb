// Reply drafts, kept in the browser (localStorage) per agent, chatbot and conversation until
// they are sent: a draft survives a reload, another agent's Close or Return to AI, and
// switching conversations. Old drafts are pruned so the storage does not grow for ever.

const PREFIX = "handoff.draft:";
// A draft nobody came back to for this long is dropped (and at most MAX_DRAFTS are kept).
const KEEP_MS = 14 * 24 * 3600 * 1000;
const MAX_DRAFTS = 200;

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled: drafts then live only as long as the page
  }
}

function keyOf(agentId, chatbotId, conversationId) {
  return PREFIX + JSON.stringify([agentId || "", chatbotId, conversationId]);
}

function read(store, key) {
  try {
    const value = JSON.parse(store.getItem(key));
    return value && typeof value.text === "string" ? value : null;
  } catch {
    return null;
  }
}

export class Drafts {
  /** agentId() is the signed-in agent's id (read when used: it is known after /api/me). */
  constructor(agentId) {
    this.agentId = agentId;
    this.memory = new Map(); // when localStorage is not available
    this.prune();
  }

  get(chatbotId, conversationId) {
    const key = keyOf(this.agentId(), chatbotId, conversationId);
    const store = storage();
    if (!store) return this.memory.get(key) || "";
    const found = read(store, key);
    return found ? found.text : "";
  }

  /** An empty (or blank) draft is no draft: removed. */
  set(chatbotId, conversationId, text) {
    if (!text || !text.trim()) {
      this.remove(chatbotId, conversationId);
      return;
    }
    const key = keyOf(this.agentId(), chatbotId, conversationId);
    const store = storage();
    if (!store) {
      this.memory.set(key, text);
      return;
    }
    try {
      store.setItem(key, JSON.stringify({ text, at: Date.now() }));
    } catch (err) {
      this.memory.set(key, text); // full or refused: keep it for this page at least
      console.warn("the draft could not be stored in the browser", err);
    }
  }

  remove(chatbotId, conversationId) {
    const key = keyOf(this.agentId(), chatbotId, conversationId);
    this.memory.delete(key);
    const store = storage();
    if (store) store.removeItem(key);
  }

  /** Drop drafts older than KEEP_MS, and the oldest beyond MAX_DRAFTS. */
  prune() {
    const store = storage();
    if (!store) return;
    const found = [];
    for (let i = 0; i < store.length; i += 1) {
      const key = store.key(i);
      if (key && key.startsWith(PREFIX)) found.push([key, read(store, key)]);
    }
    const now = Date.now();
    const kept = found.filter(([key, value]) => {
      const fresh = value && now - Number(value.at || 0) < KEEP_MS;
      if (!fresh) store.removeItem(key);
      return fresh;
    });
    kept.sort((a, b) => b[1].at - a[1].at);
    for (const [key] of kept.slice(MAX_DRAFTS)) store.removeItem(key);
  }
}
