// Handoffs that began while this page could not hear about them get their alert late rather
// than never: after a reconnect (a new "subscribed" for a chatbot), and after a gap in a
// chatbot's sequence numbers (an update lost on the way). Pure: it decides from the frames
// when to look and from which instant; the caller asks the server and alerts.

// Looking back a minute before the last instant heard covers updates still on their way when
// the socket went down and small clock differences between the gateway and the queue.
// Handoffs alerted already are not alerted twice (the caller remembers them).
const MARGIN_MS = 60000;

export class MissedHandoffs {
  constructor() {
    // chatbot id -> { since, heard, epoch, seq }: since = the first subscription (what was
    // waiting before the page opened is not news); heard = the last server time known to
    // have been heard live.
    this.chatbots = new Map();
  }

  /** A "subscribed" frame. Returns the instant (epoch ms) to look back to after a
   * reconnect, or null on the page's first subscription to that chatbot. */
  subscribed(frame) {
    const at = Date.parse(frame.at);
    if (!Number.isFinite(at)) return null;
    const known = this.chatbots.get(frame.chatbot_id);
    this.chatbots.set(frame.chatbot_id, {
      since: known ? known.since : at, heard: at, epoch: frame.epoch, seq: frame.seq,
    });
    return known ? lookBack(known) : null;
  }

  /** An "update" frame. Returns the instant to look back to when it shows that updates
   * were lost (a seq gap, or a new epoch: the index was rebuilt), else null. */
  update(frame) {
    const known = this.chatbots.get(frame.chatbot_id);
    if (!known) return null;
    const newEpoch = frame.epoch !== known.epoch;
    const from = newEpoch || frame.seq > known.seq + 1 ? lookBack(known) : null;
    if (newEpoch || frame.seq > known.seq) {
      known.epoch = frame.epoch;
      known.seq = frame.seq;
    }
    const stats = frame.update && frame.update.stats;
    const at = stats ? Date.parse(stats.computed_at) : NaN;
    if (Number.isFinite(at) && at > known.heard) known.heard = at;
    return from;
  }
}

function lookBack(known) {
  return Math.max(known.since, known.heard - MARGIN_MS);
}
