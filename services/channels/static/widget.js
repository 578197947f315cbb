/* Handoff web widget: <script src="https://CHANNELS/widget.js" data-chatbot="demo"></script>
 * Vanilla JS, no build step. Everything lives in a shadow DOM so the host page's styles
 * neither leak in nor get touched. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) { return; }
  var chatbot = script.getAttribute("data-chatbot");
  if (!chatbot || !/^[A-Za-z0-9_-]{1,64}$/.test(chatbot)) {
    console.error("Handoff widget: data-chatbot is missing or invalid.");
    return;
  }
  var base = new URL(script.src, location.href);
  var origin = base.origin;
  var wsOrigin = (base.protocol === "https:" ? "wss://" : "ws://") + base.host;
  var keyPrefix = "handoff:" + chatbot + ":";

  function store(key, value) {
    try {
      if (value === undefined) { return localStorage.getItem(keyPrefix + key); }
      if (value === null) { localStorage.removeItem(keyPrefix + key); } else { localStorage.setItem(keyPrefix + key, value); }
    } catch (e) { /* storage disabled: the identity lasts for this page only */ }
    return null;
  }
  function randomHex(bytes) {
    var a = new Uint8Array(bytes);
    crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }
  function retryAfterMs(r, fallbackMs) {
    var s = parseFloat(r.headers.get("Retry-After"));
    return s > 0 ? s * 1000 : fallbackMs;
  }
  var api = origin + "/web/" + encodeURIComponent(chatbot);
  store("visitor", null);  // the bare visitor id of older versions is no credential any more

  // The visitor's identity is a token the server issued (signed, expiring), kept in
  // localStorage so the conversation survives reloads, and renewed from half its life on.
  // Times are kept as this browser's clock plus the durations the server gave: the two
  // clocks may disagree.
  var session = null, pendingSession = null;
  function readSession() {
    try {
      var s = JSON.parse(store("session"));
      if (s && typeof s.token === "string" && typeof s.renew_at === "number") { return s; }
    } catch (e) { /* nothing stored, or not ours */ }
    return session;  // storage disabled: the identity lasts for this page only
  }
  function useSession(s) {
    if (session && s && session.visitor_id !== s.visitor_id) { forgetConversation(); }
    session = s;
    return s;
  }
  function saveSession(answer) {
    var s = { token: answer.token, visitor_id: answer.visitor_id, renew_at: Date.now() + answer.renew_in * 1000 };
    store("session", JSON.stringify(s));
    return useSession(s);
  }
  function startSession() {
    return fetch(api + "/session", { method: "POST" }).then(function (r) {
      if (r.ok) { return r.json().then(saveSession); }
      if (r.status === 429 || r.status >= 500) { return sleep(retryAfterMs(r, 5000)).then(startSession); }
      throw new Error("session refused " + r.status);
    });
  }
  function renewSession(s) {
    return fetch(api + "/session/renew", { method: "POST", headers: { "Authorization": "Bearer " + s.token } })
      .then(function (r) {
        if (r.ok) { return r.json().then(saveSession); }
        if (r.status === 401) {
          var latest = readSession();  // another tab may have renewed it first
          return latest && latest.token !== s.token ? useSession(latest) : startSession();
        }
        return useSession(s);  // not now (network, 5xx): the token serves while it lasts
      }, function () { return useSession(s); });
  }
  // The session to use; `refused` is a token the server just refused (renew it, or start anew).
  // One request at a time for the whole page: the socket and the sends may all ask at once.
  function currentSession(refused) {
    if (pendingSession) { return pendingSession; }
    var s = readSession();
    if (s && s.token !== refused && Date.now() < s.renew_at) { return Promise.resolve(useSession(s)); }
    pendingSession = (s ? renewSession(s) : startSession()).then(function (got) {
      pendingSession = null;
      return got;
    }, function (err) {
      pendingSession = null;
      throw err;
    });
    return pendingSession;
  }
  setInterval(function () {
    var s = readSession();
    if (s && Date.now() >= s.renew_at) { currentSession().catch(function () {}); }
  }, 60000);

  var host = document.createElement("div");
  host.id = "handoff-widget";
  var root = host.attachShadow({ mode: "open" });
  root.innerHTML =
    '<style>' +
    ':host{all:initial}' +
    '*{box-sizing:border-box;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}' +
    '.hf-bubble{position:fixed;right:20px;bottom:20px;width:56px;height:56px;border-radius:50%;border:0;' +
    'background:#2563eb;color:#fff;font-size:26px;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.25);z-index:2147483646}' +
    '.hf-panel{position:fixed;right:20px;bottom:88px;width:340px;max-width:calc(100vw - 40px);height:460px;' +
    'max-height:calc(100vh - 120px);background:#fff;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.25);' +
    'display:none;flex-direction:column;overflow:hidden;z-index:2147483647;color:#111827;font-size:14px}' +
    '.hf-panel.open{display:flex}' +
    '.hf-head{background:#2563eb;color:#fff;padding:12px 14px;font-weight:600;display:flex;justify-content:space-between}' +
    '.hf-status{font-weight:400;font-size:12px;opacity:.85}' +
    '.hf-list{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;background:#f9fafb}' +
    '.hf-msg{max-width:80%;min-width:0;display:flex;flex-direction:column}' +
    '.hf-msg.visitor{align-self:flex-end;align-items:flex-end}' +
    '.hf-msg.ai,.hf-msg.agent,.hf-msg.system{align-self:flex-start}' +
    '.hf-sender{font-size:11px;color:#6b7280;margin:0 4px 2px}' +
    '.hf-text{padding:8px 11px;border-radius:12px;white-space:pre-wrap;overflow-wrap:anywhere;max-width:100%;line-height:1.35}' +
    '.visitor .hf-text{background:#2563eb;color:#fff}' +
    '.ai .hf-text,.agent .hf-text,.system .hf-text{background:#e5e7eb}' +
    '.hf-failed{font-size:11px;color:#b91c1c;margin:2px 4px}' +
    '.hf-note{font-size:11px;color:#6b7280;margin:2px 4px}' +
    '.hf-line{display:none;padding:6px 12px;font-size:12px;color:#1e3a8a;background:#eff6ff;border-top:1px solid #dbeafe}' +
    '.hf-line.open{display:block}' +
    '.hf-contact{border-top:1px solid #e5e7eb;padding:10px 12px;display:none;flex-direction:column;gap:6px;background:#fff}' +
    '.hf-contact.open{display:flex}' +
    '.hf-contact label{font-size:12px;color:#374151;display:flex;flex-direction:column;gap:2px}' +
    '.hf-contact input{padding:6px 8px;border:1px solid #d1d5db;border-radius:6px;font-size:13px}' +
    '.hf-contact-error{font-size:12px;color:#b91c1c}' +
    '.hf-form{display:flex;border-top:1px solid #e5e7eb}' +
    '.hf-input{flex:1;border:0;padding:12px;font-size:14px;resize:none;outline:none}' +
    'button.hf-send,button.hf-contact-send{border:0;background:#2563eb;color:#fff;padding:0 16px;cursor:pointer;font-size:14px}' +
    'button.hf-contact-send{padding:8px;border-radius:6px}' +
    'button:disabled{opacity:.5;cursor:default}' +
    '</style>' +
    '<button class="hf-bubble" type="button" aria-label="Open chat">' +
    '<svg viewBox="0 0 24 24" width="26" height="26" aria-hidden="true" focusable="false">' +
    '<path fill="currentColor" d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z"/>' +
    '</svg></button>' +
    '<div class="hf-panel" role="dialog" aria-label="Chat">' +
    '  <div class="hf-head"><span>Chat with us</span><span class="hf-status">connecting…</span></div>' +
    '  <div class="hf-list" aria-live="polite"></div>' +
    '  <div class="hf-line" role="status" aria-live="polite"></div>' +
    '  <form class="hf-contact" novalidate>' +
    '    <div class="hf-contact-title">Please leave your contact details</div>' +
    '    <div class="hf-contact-fields"></div>' +
    '    <div class="hf-contact-error"></div>' +
    '    <button class="hf-contact-send" type="submit">Send details</button>' +
    '  </form>' +
    '  <form class="hf-form"><textarea class="hf-input" rows="1" placeholder="Type your message..."></textarea>' +
    '  <button class="hf-send" type="submit">Send</button></form>' +
    '</div>';

  var $ = function (sel) { return root.querySelector(sel); };
  var bubble = $(".hf-bubble"), panel = $(".hf-panel"), list = $(".hf-list"), statusEl = $(".hf-status");
  var form = $(".hf-form"), input = $(".hf-input"), sendBtn = $(".hf-send");
  var contactForm = $(".hf-contact"), contactFields = $(".hf-contact-fields"), contactError = $(".hf-contact-error");
  var lineEl = $(".hf-line");
  var shown = {};
  // The visitor's place in line while they wait for a person (null: not waiting; the server
  // sends it on connect and whenever the line moves).
  function showLine(text) {
    lineEl.textContent = text || "";
    lineEl.classList.toggle("open", !!text);
  }
  function forgetConversation() {  // a new identity: the old one's messages are not its own
    list.textContent = "";
    shown = {};
    showLine(null);
    contactForm.classList.remove("open");
    if (socket) { socket.close(); }  // reconnects as the new visitor (its history is replayed)
  }
  var contactRequestId = null;
  var LABELS = { name: "Name", email: "E-mail", phone: "Phone" };
  var TYPES = { name: "text", email: "email", phone: "tel" };

  bubble.addEventListener("click", function () {
    panel.classList.toggle("open");
    if (panel.classList.contains("open")) { input.focus(); }
  });

  function render(m) {
    if (!m || !m.message_id) { return null; }
    if (shown[m.message_id]) { return shown[m.message_id]; }
    var row = document.createElement("div");
    row.className = "hf-msg " + (m.sender || "ai");
    row.setAttribute("data-message-id", m.message_id);
    if (m.sender === "agent" && m.sender_name) {
      var who = document.createElement("div");
      who.className = "hf-sender";
      who.textContent = m.sender_name;
      row.appendChild(who);
    }
    var bubbleText = document.createElement("div");
    bubbleText.className = "hf-text";
    bubbleText.textContent = m.text;
    row.appendChild(bubbleText);
    list.appendChild(row);
    list.scrollTop = list.scrollHeight;
    shown[m.message_id] = row;
    if (m.request_contact_fields && m.request_contact_fields.length) {
      if (store("contact-done:" + m.message_id) !== "1") { showContactForm(m.message_id, m.request_contact_fields); }
    }
    return row;
  }

  function showContactForm(requestId, fields) {
    contactRequestId = requestId;
    contactFields.textContent = "";
    contactError.textContent = "";
    fields.forEach(function (f) {
      if (!LABELS[f]) { return; }
      var label = document.createElement("label");
      label.textContent = LABELS[f];
      var field = document.createElement("input");
      field.name = f;
      field.type = TYPES[f];
      if (f === "name" && store("name")) { field.value = store("name"); }
      label.appendChild(field);
      contactFields.appendChild(label);
    });
    contactForm.classList.add("open");
    panel.classList.add("open");
  }

  contactForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var body = {};
    var any = false;
    Array.prototype.forEach.call(contactFields.querySelectorAll("input"), function (el) {
      var v = el.value.trim();
      if (v) { body[el.name] = v; any = true; }
    });
    if (!any) { contactError.textContent = "Please fill in at least one field."; return; }
    var btn = $(".hf-contact-send");
    btn.disabled = true;
    authorized("/contact", body).then(function (r) {
      if (r.ok) {
        if (body.name) { store("name", body.name); }
        if (contactRequestId) { store("contact-done:" + contactRequestId, "1"); }
        contactForm.classList.remove("open");
        return;
      }
      return r.json().then(function (j) {
        var d = j && j.detail;
        contactError.textContent = typeof d === "string" ? d : (d && d[0] && d[0].msg) || "Could not send your details.";
      });
    }).catch(function () {
      contactError.textContent = "Could not send your details. Please try again.";
    }).then(function () { btn.disabled = false; });
  });

  // POST with the visitor's token; a refused token (expired, renewed elsewhere) is renewed
  // and the request sent once more.
  function authorized(path, body, retried) {
    return currentSession().then(function (s) {
      return fetch(api + path, {
        method: "POST", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + s.token }
      }).then(function (r) {
        if (r.status !== 401 || retried) { return r; }
        return currentSession(s.token).then(function () { return authorized(path, body, true); });
      });
    });
  }

  function post(message, attempt) {
    var body = { client_message_id: message.message_id, text: message.text };
    var name = store("name");
    if (name) { body.name = name; }
    return authorized("/messages", body).then(function (r) {
      if (r.ok) { note(message, null); return; }
      // 429 (sending too fast) and 5xx (not accepted yet): wait as long as Retry-After says;
      // the same client_message_id makes the retry safe.
      if (r.status === 429 && attempt < 20) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          note(message, typeof j.detail === "string" ? j.detail : "Sending too fast; your message will be sent shortly.");
          return retry(message, attempt, retryAfterMs(r, 5000), true);
        });
      }
      if (r.status >= 500 && attempt < 5) { return retry(message, attempt, retryAfterMs(r, 0)); }
      throw new Error("refused " + r.status);
    }, function () {
      if (attempt < 5) { return retry(message, attempt, 0); }
      throw new Error("network");
    });
  }
  function retry(message, attempt, retryAfterMs, exact) {
    var wait = exact ? retryAfterMs : Math.max(500 * Math.pow(2, attempt), retryAfterMs);
    return sleep(wait).then(function () { return post(message, attempt + 1); });
  }
  function note(message, text) {  // a friendly word under a message that waits (null: done waiting)
    var el = message.row && message.row.querySelector(".hf-note");
    if (!text) { if (el) { el.parentNode.removeChild(el); } return; }
    if (!el) {
      el = document.createElement("div");
      el.className = "hf-note";
      message.row.appendChild(el);
    }
    el.textContent = text;
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = input.value;
    if (!text.trim()) { return; }
    input.value = "";
    var message = { message_id: "m_" + randomHex(12), sender: "visitor", text: text };
    var row = message.row = render(message);
    post(message, 0).catch(function () {
      note(message, null);
      var failed = document.createElement("div");
      failed.className = "hf-failed";
      failed.textContent = "Not sent. Please try again.";
      row.appendChild(failed);
    });
  });
  input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); form.requestSubmit ? form.requestSubmit(sendBtn) : sendBtn.click(); }
  });

  // Live replies: history replay on connect, then real time; reconnect with backoff.
  // The token goes in the first frame, not the URL (URLs end up in logs). A refused token
  // (close code 4401) is renewed, or a new session started, before the next attempt.
  var backoff = 1000, socket = null, pinger = null, refusedToken = null;
  function reconnect() {
    setTimeout(connect, backoff + Math.random() * 300);
    backoff = Math.min(backoff * 2, 30000);
  }
  function connect() {
    statusEl.textContent = "connecting…";
    currentSession(refusedToken).then(open, function () {
      statusEl.textContent = "reconnecting…";
      reconnect();
    });
  }
  function open(s) {
    refusedToken = null;
    socket = new WebSocket(wsOrigin + "/web/" + encodeURIComponent(chatbot) + "/ws");
    socket.onopen = function () {
      socket.send(JSON.stringify({ type: "auth", token: s.token }));
      pinger = setInterval(function () {
        if (socket.readyState === 1) { socket.send('{"type":"ping"}'); }
      }, 25000);
    };
    socket.onmessage = function (ev) {
      var m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === "message") {
        render(m);
        if (m.sender === "agent") { showLine(null); }  // answered: out of the line
      }
      else if (m.type === "line") { showLine(m.text); }
      else if (m.type === "ready") {
        showLine(null);  // the server sends the place after this when the visitor is in line
        backoff = 1000;
        statusEl.textContent = "online";
        host.setAttribute("data-ready", "1");
      }
    };
    socket.onclose = function (ev) {
      clearInterval(pinger);
      if (ev.code === 4401) { refusedToken = s.token; }
      host.removeAttribute("data-ready");
      statusEl.textContent = "reconnecting…";
      reconnect();
    };
  }

  function mount() {
    document.body.appendChild(host);
    connect();
  }
  if (document.body) { mount(); } else { document.addEventListener("DOMContentLoaded", mount); }
})();
