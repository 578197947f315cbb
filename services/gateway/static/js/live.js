// The live protocol (docs/contracts.md "Live protocol"): one websocket, per-chatbot
// subscriptions, seq/epoch tracking with resync from a snapshot, reconnect with backoff.

/** The single "update" frames an "update" or "updates" frame stands for, in order. An
 * "updates" frame coalesces a chatbot's updates of one tick (docs/contracts.md "Live
 * protocol"): each keeps its epoch and seq, even when only its place is left. */
export function updateFrames(frame) {
  if (frame.type === "update") return [frame];
  return (frame.updates || []).map((update) => ({
    type: "update", chatbot_id: frame.chatbot_id, epoch: update.epoch, seq: update.seq, update,
  }));
}

/** Per-chatbot ordering. Pure: it decides, the caller fetches snapshots and applies. */
export class ChatbotFeed {
  // reorderWaitMs: how long a seq gap may wait for the missing updates before a resync.
  // Queue instances publish a chatbot's updates in parallel, so seq N+1 can arrive just
  // before N; only a gap that stays is a loss.
  constructor(chatbotId, { fetchSnapshot, onSnapshot, onUpdate, onError, reorderWaitMs = 1000 }) {
    this.reorderWaitMs = reorderWaitMs;
    this.gapTimer = null;
    this.chatbotId = chatbotId;
    this.fetchSnapshot = fetchSnapshot;
    this.onSnapshot = onSnapshot;
    this.onUpdate = onUpdate;
    this.onError = onError || (() => {});
    this.epoch = null;
    this.seq = null;
    this.syncing = null; // the running resync's promise
    this.again = false;
    this.buffer = [];
    this.resyncs = 0;
  }

  /** A new subscription (first connect or after a reconnect): updates may have been missed. */
  subscribed() {
    return this.resync();
  }

  update(frame) {
    if (this.syncing) {
      this.buffer.push(frame);
      return;
    }
    if (this.epoch === null || frame.epoch !== this.epoch) {
      this.buffer.push(frame);
      this.resync();
      return;
    }
    if (frame.seq <= this.seq) return; // already reflected in what we hold
    if (frame.seq > this.seq + 1 || this.gapTimer !== null) {
      // Hold it; apply once the missing ones came, resync if they do not come in time.
      this.buffer.push(frame);
      if (this.drain()) this.stopGapTimer();
      else if (this.gapTimer === null) {
        if (this.reorderWaitMs <= 0) this.resync();
        else this.gapTimer = setTimeout(() => { this.gapTimer = null; this.resync(); }, this.reorderWaitMs);
      }
      return;
    }
    this.seq = frame.seq;
    this.onUpdate(frame.update, frame);
  }

  stopGapTimer() {
    clearTimeout(this.gapTimer);
    this.gapTimer = null;
  }

  resync() {
    this.stopGapTimer();
    if (this.syncing) {
      this.again = true;
      return this.syncing;
    }
    this.syncing = (async () => {
      let delay = 500;
      for (;;) {
        this.again = false;
        try {
          const snapshot = await this.fetchSnapshot(this.chatbotId);
          this.resyncs += 1;
          this.epoch = snapshot.epoch;
          this.seq = snapshot.seq;
          this.onSnapshot(snapshot);
        } catch (err) {
          this.onError(err);
          if (err && (err.status === 401 || err.status === 403)) return;
          await new Promise((r) => setTimeout(r, delay));
          delay = Math.min(delay * 2, 10000);
          continue;
        }
        if (!this.again && this.drain()) return;
      }
    })().finally(() => { this.syncing = null; });
    return this.syncing;
  }

  /** Apply what arrived during the resync; false when it showed another gap. */
  drain() {
    const frames = this.buffer.sort((a, b) => a.seq - b.seq);
    this.buffer = [];
    for (let i = 0; i < frames.length; i++) {
      const frame = frames[i];
      if (frame.epoch !== this.epoch) {
        this.buffer = frames.slice(i).filter((f) => f.epoch !== this.epoch);
        return false;
      }
      if (frame.seq <= this.seq) continue;
      if (frame.seq > this.seq + 1) {
        this.buffer = frames.slice(i);
        return false;
      }
      this.seq = frame.seq;
      this.onUpdate(frame.update, frame);
    }
    return true;
  }
}

/** One websocket to /ws for the page, reconnecting with backoff while the page is open. */
export class LiveConnection {
  constructor({ url, onFrame, onStatus, onUnauthorized }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onStatus = onStatus || (() => {});
    this.onUnauthorized = onUnauthorized || (() => {});
    this.subscriptions = new Set();
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.pinger = null;
    this.stopped = false;
    this.pingEveryMs = 20000;
    this.silenceLimitMs = 45000;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    if (this.socket) this.socket.close(1000);
  }

  subscribe(chatbotId) {
    this.subscriptions.add(chatbotId);
    this.send({ type: "subscribe", chatbot_id: chatbotId });
  }

  unsubscribe(chatbotId) {
    this.subscriptions.delete(chatbotId);
    this.send({ type: "unsubscribe", chatbot_id: chatbotId });
  }

  send(frame) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(frame));
  }

  connect() {
    this.onStatus(this.attempt === 0 ? "connecting" : "reconnecting");
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    let answered = false;
    let lastFrameAt = Date.now();
    socket.addEventListener("open", () => {
      lastFrameAt = Date.now();
      for (const id of this.subscriptions) this.send({ type: "subscribe", chatbot_id: id });
      if (!this.subscriptions.size) this.send({ type: "ping" });
      clearInterval(this.pinger);
      // Ping regularly; a socket that stays silent (no pong, no frame) is dead even if the
      // browser has not noticed: drop it and reconnect.
      this.pinger = setInterval(() => {
        if (Date.now() - lastFrameAt > this.silenceLimitMs) {
          socket.close(4000, "silent");
          this.onClosed(socket, { code: 4000 });
          return;
        }
        this.send({ type: "ping" });
      }, this.pingEveryMs);
    });
    socket.addEventListener("message", (event) => {
      lastFrameAt = Date.now();
      // Live only once the server answered: an open socket nobody serves is not live, and
      // the backoff keeps growing until a server really answers.
      if (!answered) {
        answered = true;
        this.attempt = 0;
        this.onStatus("live");
      }
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      this.onFrame(frame);
    });
    socket.addEventListener("close", (event) => this.onClosed(socket, event));
  }

  onClosed(socket, event) {
    if (this.socket !== socket) return;
    clearInterval(this.pinger);
    this.socket = null;
    if (this.stopped) return;
    if (event.code === 4401) {
      this.onUnauthorized();
      return;
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    this.onStatus("reconnecting");
    // 0.5s, 1s, 2s, ... up to 15s, with jitter so many dashboards do not reconnect in step.
    const base = Math.min(15000, 500 * 2 ** this.attempt);
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), base / 2 + Math.random() * base / 2);
  }
}
