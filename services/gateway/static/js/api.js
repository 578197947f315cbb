// The gateway's public API (docs/contracts.md), with the session's CSRF token on every
// state-changing call and errors turned into readable messages (never swallowed).

export class ApiError extends Error {
  constructor(status, message, { retryable = false, retryAfterS = 0 } = {}) {
    super(message);
    this.status = status;
    // Seconds the server asked to wait before trying again (its Retry-After; 0 when none).
    this.retryAfterS = retryAfterS;
    // Network failures and 5xx may not have reached the queue: the same click may be retried
    // with the same command id (the queue applies it once).
    this.retryable = retryable;
  }
}

let csrfToken = null;
let signedInAgent = null; // the agent this page shows (from /api/me)
let csrfRefresh = null;   // one /api/me at a time when several calls find the token stale

// What the gateway answers when the CSRF token does not match the session cookie.
const BAD_CSRF = "Missing or invalid CSRF token.";

export function setCsrfToken(token, agentId) {
  csrfToken = token;
  if (agentId !== undefined) signedInAgent = agentId;
}

/** The signed-in agent's id (drafts are kept per agent), or null before /api/me. */
export function signedInAgentId() {
  return signedInAgent;
}

// The server's limits the page must respect (from /api/me: one source, not a copy here).
let limits = {};

export function setLimits(given) {
  limits = given || {};
}

/** The longest reply the gateway accepts, in characters; null when the server did not say. */
export function replyMaxChars() {
  const n = Number(limits.reply_max_chars);
  return Number.isInteger(n) && n > 0 ? n : null;
}

/** How long before WhatsApp's reply window closes a row is flagged and lifted, in ms (the
 * gateway's REPLY_WINDOW_WARNING_MIN; 60 min when the server did not say). */
export function replyWindowWarningMs() {
  const s = Number(limits.reply_window_warning_s);
  return Number.isFinite(s) && s >= 0 ? s * 1000 : 60 * 60 * 1000;
}

const RELOADING = "reloading";

/** Signing in again (in another tab) replaces the session cookie, so this page's CSRF token
 * belongs to a session the browser no longer sends. Read the token of the session it does
 * send; true when the call may be retried with it. A different agent signed in meanwhile:
 * the page reloads as that agent rather than act for them under this one's name (RELOADING). */
async function refreshCsrfToken() {
  if (!csrfRefresh) {
    csrfRefresh = (async () => {
      try {
        const { data } = await request("GET", "/api/me");
        if (signedInAgent && data.agent.agent_id !== signedInAgent) {
          location.reload();
          return RELOADING;
        }
        setCsrfToken(data.csrf_token);
        return true;
      } catch {
        return false;
      }
    })().finally(() => { csrfRefresh = null; });
  }
  return csrfRefresh;
}

/** FastAPI's "detail" is a string for our own errors, a list for request validation. */
export function errorText(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail
      .map((d) => String((d && d.msg) || d).replace(/^Value error, /, ""))
      .join(" ");
  }
  if (body && typeof body.error === "string" && body.error) return body.error;
  if (status === 401) return "Your session has ended. Please sign in again.";
  if (status === 403) return "You are not a member of this chatbot.";
  if (status >= 500) return `The server had a problem (${status}). Please try again.`;
  return `Request failed (${status}).`;
}

export async function request(method, path, body, { csrfRetried = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  let response;
  try {
    response = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, "Could not reach the server. Check your connection and try again.", { retryable: true });
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = { detail: text }; }
  }
  if (response.status === 401 && !path.startsWith("/api/login") && !path.startsWith("/api/logout")) {
    onUnauthorized();
  }
  if (response.status === 403 && method !== "GET" && !csrfRetried && data && data.detail === BAD_CSRF) {
    const refreshed = await refreshCsrfToken();
    // The page is going away: the call neither succeeds nor fails (no error shown meanwhile).
    if (refreshed === RELOADING) return new Promise(() => {});
    // Refused before anything was done: the same call again, with the current session's token.
    if (refreshed) return request(method, path, body, { csrfRetried: true });
  }
  if (!response.ok) {
    throw new ApiError(response.status, errorText(data, response.status), {
      retryable: response.status >= 500,
      retryAfterS: Math.max(0, Math.ceil(Number(response.headers.get("Retry-After")) || 0)),
    });
  }
  return { status: response.status, data };
}

export function onUnauthorized() {
  const next = location.pathname + location.search + location.hash;
  location.assign(`/login?next=${encodeURIComponent(next)}`);
}

const enc = encodeURIComponent;

export const api = {
  me: () => request("GET", "/api/me"),
  login: (email, password) => request("POST", "/api/login", { email, password }),
  logout: () => request("POST", "/api/logout"),
  setMuted: (muted) => request("PUT", "/api/me/preferences", { muted }),
  snapshot: (bot, limit = 50) => request("GET", `/api/chatbots/${enc(bot)}/snapshot?limit=${limit}`),
  stats: (bot) => request("GET", `/api/chatbots/${enc(bot)}/stats`),
  handoffs: (bot, cursor, limit = 50) =>
    request("GET", `/api/chatbots/${enc(bot)}/handoffs?limit=${limit}` + (cursor ? `&cursor=${enc(cursor)}` : "")),
  conversations: (bot, { status = "all", q = "", cursor = null, limit = 50 } = {}) => {
    const params = new URLSearchParams({ status, limit: String(limit) });
    if (q) params.set("q", q);
    if (cursor) params.set("cursor", cursor);
    return request("GET", `/api/chatbots/${enc(bot)}/conversations?${params}`);
  },
  conversation: (bot, cid, { before = null, limit = 100 } = {}) =>
    request("GET", `/api/chatbots/${enc(bot)}/conversations/${enc(cid)}?limit=${limit}` + (before ? `&before=${enc(before)}` : "")),
  // action: "reply" | "close" | "reopen" | "return-to-ai" | "mark-seen"
  command: (bot, cid, action, body) =>
    request("POST", `/api/chatbots/${enc(bot)}/conversations/${enc(cid)}/${action}`, body),
  settings: (bot) => request("GET", `/api/chatbots/${enc(bot)}/settings`),
  saveHumanHandoff: (bot, settings) => request("PUT", `/api/chatbots/${enc(bot)}/settings/human-handoff`, settings),
};

/** A fresh command id per click (crypto.randomUUID where available, e.g. on http://localhost). */
export function newCommandId() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
