// The dashboard's time formats: the JavaScript twin of shared/formatting.py.
// Both are tested against the same table (tests/fixtures/waiting_cases.json), so keep the
// rules here identical to the Python ones, word for word.

export const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
export const NO_HANDOFFS = "—";
export const CHANNEL_LABELS = { web: "Web widget", whatsapp: "WhatsApp", telegram: "Telegram" };
// The agent's own zone (the browser's): the zone every time on the dashboard is shown in.
export const AGENT_ZONE = new Intl.DateTimeFormat().resolvedOptions().timeZone;

function toMillis(value) {
  if (value instanceof Date) return value.getTime();
  if (typeof value === "number") return value;
  return Date.parse(value);
}

function wholeSecondsBetween(since, now) {
  // Python: max(0, int((now - since).total_seconds())) — truncation towards zero, then clamp.
  return Math.max(0, Math.trunc((toMillis(now) - toMillis(since)) / 1000));
}

// The calendar date of an instant in a time zone (Intl does the zone rules, DST included).
function localDate(ms, tz) {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: tz || undefined, year: "numeric", month: "numeric", day: "numeric",
  }).formatToParts(new Date(ms));
  const get = (type) => Number(parts.find((p) => p.type === type).value);
  return { year: get("year"), month: get("month"), day: get("day") };
}

/** Row waiting time: "just now", "15m", "15h", or the date the visitor started waiting
 * ("Nov 3", with the year when it is not this year) in the chatbot's time zone. */
export function formatRowWaiting(since, now, tz = "UTC") {
  const seconds = wholeSecondsBetween(since, now);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  const local = localDate(toMillis(since), tz);
  const localNow = localDate(toMillis(now), tz);
  const label = `${MONTHS[local.month - 1]} ${local.day}`;
  return local.year === localNow.year ? label : `${label}, ${local.year}`;
}

/** Oldest waiting: "just now" (as its row says), "15m", "2h 10m" (or "2h"), "1d 4h" (or
 * "1d"); "—" when nothing waits. */
export function formatOldestWaiting(since, now) {
  if (since === null || since === undefined) return NO_HANDOFFS;
  const minutes = Math.floor(wholeSecondsBetween(since, now) / 60);
  return minutes < 1 ? "just now" : formatMinutes(minutes);
}

/** Whole minutes (one or more) as the dashboard writes a span: 12m, 2h, 2h 5m, 1d, 1d 4h. */
export function formatMinutes(minutes) {
  if (minutes < 60) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  const mins = minutes % 60;
  if (hours < 24) return mins ? `${hours}h ${mins}m` : `${hours}h`;
  const days = Math.floor(hours / 24);
  const restHours = hours % 24;
  return restHours ? `${days}d ${restHours}h` : `${days}d`;
}

export function channelLabel(channel) {
  return CHANNEL_LABELS[channel] || channel;
}

/** A time on the dashboard: "14:05" today, "Nov 3, 14:05" otherwise; in the agent's zone
 * unless `tz` names another. */
export function formatMessageTime(at, now = Date.now(), tz = AGENT_ZONE) {
  const ms = toMillis(at);
  const opts = { timeZone: tz || undefined, hour: "2-digit", minute: "2-digit", hour12: false };
  const time = new Intl.DateTimeFormat("en-GB", opts).format(new Date(ms));
  const d = localDate(ms, tz);
  const n = localDate(toMillis(now), tz);
  if (d.year === n.year && d.month === n.month && d.day === n.day) return time;
  const date = `${MONTHS[d.month - 1]} ${d.day}` + (d.year === n.year ? "" : `, ${d.year}`);
  return `${date}, ${time}`;
}

/** What hovering a time shows: the same instant in the chatbot's zone,
 * "Chatbot's time: Dec 3, 21:07 (Pacific/Kiritimati)". */
export function chatbotTimeTitle(at, tz, now = Date.now()) {
  if (!tz) return "";
  const ms = toMillis(at);
  if (!Number.isFinite(ms)) return "";
  const time = new Intl.DateTimeFormat("en-GB", { timeZone: tz, hour: "2-digit", minute: "2-digit", hour12: false })
    .format(new Date(ms));
  const d = localDate(ms, tz);
  const year = d.year === localDate(toMillis(now), tz).year ? "" : `, ${d.year}`;
  return `Chatbot's time: ${MONTHS[d.month - 1]} ${d.day}${year}, ${time} (${tz})`;
}
