// Tools → Human Handoff: every setting of the tool with its default (shared/chatbots.py),
// and the chatbot's timezone (one per chatbot: the schedule, Today, Resolved this week).

import { api, newCommandId } from "./api.js";
import { h, clear } from "./dom.js";
import { formatMessageTime } from "./format.js";
import { slaSettings } from "./sla.js";

const DAYS = [["mon", "Mon"], ["tue", "Tue"], ["wed", "Wed"], ["thu", "Thu"], ["fri", "Fri"], ["sat", "Sat"], ["sun", "Sun"]];
const CONTACT_FIELDS = [["name", "Name"], ["email", "E-mail"], ["phone", "Phone"]];

function hhmm(value) {
  return (value || "").slice(0, 5);
}

/** A minutes field as the API takes it: null (off) when empty, a number when one. */
function minutesOf(input) {
  const text = input.value.trim();
  if (text === "") return null;
  return /^\d+$/.test(text) ? Number(text) : text;
}

function timezones() {
  try { return Intl.supportedValuesOf("timeZone"); } catch { return ["UTC"]; }
}

export class ToolsView {
  constructor(root, { chatbotId, onSaved }) {
    this.root = root;
    this.chatbotId = chatbotId;
    this.onSaved = onSaved;
    clear(root);
    this.body = h("div", { class: "tool-body" }, h("p", { class: "pane-loading", text: "Loading settings…" }));
    root.append(h("div", { class: "tools" },
      h("nav", { class: "tools-nav", "aria-label": "Tools" },
        h("a", { href: `#/${encodeURIComponent(chatbotId)}/tools/human-handoff`, class: "tools-link active", "aria-current": "page" }, "Human Handoff")),
      this.body));
    this.load();
  }

  async load() {
    try {
      const { data } = await api.settings(this.chatbotId);
      // The settings version this form shows: a save sends it, and the queue refuses it (409)
      // when anything changed since (another agent's save, a credential rotation).
      this.version = data.version;
      this.render({ ...data.human_handoff, timezone: data.timezone });
    } catch (err) {
      clear(this.body).append(h("div", { class: "error", role: "alert", text: err.message }));
    }
  }

  render(s) {
    const f = {};
    const field = (id, label, input, hint) => h("div", { class: "field" },
      h("label", { for: id, class: "field-label", text: label }), input, hint ? h("p", { class: "field-hint", text: hint }) : null);
    f.enabled = h("input", { type: "checkbox", id: "hh-enabled", name: "enabled", role: "switch", checked: s.enabled });
    f.conditions = h("textarea", { id: "hh-conditions", name: "conditions", rows: "7", value: s.conditions });
    f.offline = h("textarea", { id: "hh-offline", name: "offline_message", rows: "3", value: s.offline_message });
    f.schedule = h("input", { type: "checkbox", id: "hh-schedule", name: "schedule_enabled", role: "switch", checked: s.schedule_enabled });
    f.days = DAYS.map(([key, label]) => h("label", { class: "chip" },
      h("input", { type: "checkbox", name: "available_days", value: key, checked: s.available_days.includes(key) }), label));
    f.start = h("input", { type: "time", id: "hh-start", name: "start_time", value: hhmm(s.start_time) });
    f.end = h("input", { type: "time", id: "hh-end", name: "end_time", value: hhmm(s.end_time) });
    f.tz = h("input", { type: "text", id: "hh-timezone", name: "timezone", value: s.timezone, list: "hh-timezones", autocomplete: "off", spellcheck: "false" });
    const tzList = h("datalist", { id: "hh-timezones" }, timezones().map((z) => h("option", { value: z })));
    // The schedule's hours are the chatbot's: say which zone and what time it is there now.
    const scheduleZone = h("p", { class: "field-hint schedule-zone", "aria-live": "polite" });
    const showZone = () => {
      const zone = f.tz.value.trim();
      let now = "";
      try { now = formatMessageTime(Date.now(), Date.now(), zone); } catch { /* not a zone (yet) */ }
      scheduleZone.textContent = now ? `Start Time and End Time are in ${zone} (now ${now} there).`
        : "Start Time and End Time are in the chatbot's timezone.";
    };
    showZone();
    f.tz.addEventListener("input", showZone);
    f.lineEnabled = h("input", { type: "checkbox", id: "hh-line-enabled", name: "line_enabled", role: "switch", checked: s.line_enabled });
    f.line = h("input", { type: "text", id: "hh-line", name: "line_message", value: s.line_message, maxlength: "500" });
    f.lineNoEstimate = h("input", { type: "text", id: "hh-line-no-estimate", name: "line_message_no_estimate", value: s.line_message_no_estimate, maxlength: "500" });
    const lineBox = h("fieldset", { class: "line-texts", disabled: !s.line_enabled },
      h("legend", { class: "sr-only", text: "Place in line" }),
      field("hh-line", "Place in Line Message", f.line, "{position} is the visitor's place, {wait} the expected wait (\"about 4 minutes\")."),
      field("hh-line-no-estimate", "Place in Line Message without an estimate", f.lineNoEstimate,
        "When too few recent handoffs were answered to estimate the wait: {position} only."));
    f.lineEnabled.addEventListener("change", () => { lineBox.disabled = !f.lineEnabled.checked; });
    // Wait-time SLA: minutes, empty = off (the queue checks them and says what is wrong).
    const minutes = (id, name, value) => h("input", { type: "text", inputmode: "numeric", id, name, size: "5",
      value: value === null || value === undefined ? "" : String(value), autocomplete: "off" });
    f.alertAfter = minutes("hh-alert-after", "alert_after_min", s.alert_after_min);
    f.urgentAfter = minutes("hh-urgent-after", "urgent_after_min", s.urgent_after_min);
    f.contact = CONTACT_FIELDS.map(([key, label]) => h("label", { class: "chip" },
      h("input", { type: "checkbox", name: "contact_fields", value: key, checked: s.contact_fields.includes(key) }), label));
    const status = h("div", { class: "form-status", role: "status", "aria-live": "polite" });
    const error = h("div", { class: "error form-error", role: "alert", hidden: true });
    const save = h("button", { type: "submit", class: "btn btn-primary" }, "Save");
    const scheduleBox = h("fieldset", { class: "schedule", disabled: !s.schedule_enabled },
      h("legend", { class: "sr-only", text: "Schedule" }),
      h("div", { class: "field" }, h("span", { class: "field-label", id: "hh-days-label", text: "Available Days" }),
        h("div", { class: "chips", role: "group", "aria-labelledby": "hh-days-label" }, f.days)),
      h("div", { class: "field-row" },
        field("hh-start", "Start Time", f.start), field("hh-end", "End Time", f.end)),
      scheduleZone);
    f.schedule.addEventListener("change", () => { scheduleBox.disabled = !f.schedule.checked; });

    const form = h("form", { class: "tool-form", "aria-labelledby": "hh-title", novalidate: true },
      h("header", { class: "tool-header" },
        h("div", {},
          h("h2", { id: "hh-title", text: "Human Handoff" }),
          h("p", { class: "field-hint", text: "Let the AI hand a conversation to your team. When it is on, the Handoff tab appears." })),
        h("label", { class: "switch" }, f.enabled, h("span", { text: "Enabled" }))),
      field("hh-conditions", "Handoff Conditions", f.conditions, "When the AI should hand the conversation over to a human."),
      field("hh-offline", "Offline Message", f.offline, "The reply when a handoff is requested outside business hours."),
      field("hh-timezone", "Timezone", f.tz,
        "The chatbot's timezone: the schedule's hours, and the days Today and Resolved this week count. Times on the dashboard show in yours; hover one to see the chatbot's."),
      tzList,
      h("div", { class: "field" }, h("label", { class: "switch" }, f.schedule, h("span", { text: "Enable Schedule" }))),
      scheduleBox,
      h("div", { class: "field" }, h("span", { class: "field-label", id: "hh-contact-label", text: "Contact fields to collect" }),
        h("div", { class: "chips", role: "group", "aria-labelledby": "hh-contact-label" }, f.contact)),
      h("div", { class: "field" }, h("label", { class: "switch" }, f.lineEnabled, h("span", { text: "Tell visitors their place in line" }))),
      lineBox,
      h("div", { class: "field-row" },
        field("hh-alert-after", "Alert after (min)", f.alertAfter, "Open handoffs turn amber after this wait. Empty: off."),
        field("hh-urgent-after", "Urgent after (min)", f.urgentAfter,
          "They turn red after this wait, and one nobody has taken alerts the team again. Empty: off.")),
      error,
      h("div", { class: "form-actions" }, save, status));

    // One command id per intended change: a save retried after a network failure or a 202
    // reuses it; a successful save starts a new one.
    let commandId = newCommandId();
    form.addEventListener("input", () => { commandId = newCommandId(); });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = {
        enabled: f.enabled.checked,
        conditions: f.conditions.value,
        offline_message: f.offline.value,
        schedule_enabled: f.schedule.checked,
        available_days: f.days.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => i.value),
        start_time: f.start.value,
        end_time: f.end.value,
        timezone: f.tz.value.trim(),
        contact_fields: f.contact.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => i.value),
        line_enabled: f.lineEnabled.checked,
        line_message: f.line.value,
        line_message_no_estimate: f.lineNoEstimate.value,
        alert_after_min: minutesOf(f.alertAfter),
        urgent_after_min: minutesOf(f.urgentAfter),
      };
      save.disabled = true;
      error.hidden = true;
      status.textContent = "Saving…";
      try {
        const { status: code, data } = await api.saveHumanHandoff(this.chatbotId,
          { ...body, command_id: commandId, version: this.version });
        if (code === 202) {
          // Accepted but not yet confirmed by the queue: it is applied once; saving again is safe.
          status.textContent = (data && data.detail) || "Saving… the change will apply shortly.";
          return;
        }
        commandId = newCommandId();
        if (data && Number.isInteger(data.version)) this.version = data.version;
        status.textContent = "Saved.";
        const saved = data && typeof data.enabled === "boolean" ? data : (data && data.human_handoff) || body;
        slaSettings.set(this.chatbotId, saved); // this page's rows repaint at once
        this.onSaved(saved, this.version);
      } catch (err) {
        status.textContent = "";
        error.textContent = err.message;
        if (err.status === 409) {
          // Changed elsewhere since this form was loaded: nothing was saved; offer the latest.
          error.append(" ", h("button", { type: "button", class: "btn btn-link", onclick: () => this.load() }, "Reload settings"));
        }
        error.hidden = false;
      } finally {
        save.disabled = false;
      }
    });
    clear(this.body).append(form);
  }
}
