// The agent's chatbots (from /api/me), sorted by name; a name or Handoff switch may change
// while the page is open (a "settings" frame, or /api/me again).

export class Chatbots {
  constructor(list) {
    this.list = [...list].sort((x, y) => (x.name || x.chatbot_id).localeCompare(y.name || y.chatbot_id));
  }

  get(id) {
    return this.list.find((c) => c.chatbot_id === id) || null;
  }

  /** True when the chatbot is known and something about it changed. `version` (the settings'):
   * /api/me, a "settings" frame and a save's own answer may arrive in any order, so what is
   * older than what the page already shows is ignored. */
  set(id, enabled, name, version) {
    const c = this.get(id);
    if (!c) return false;
    if (Number.isInteger(version)) {
      if (Number.isInteger(c.settings_version) && version < c.settings_version) return false;
      c.settings_version = version;
    }
    const changed = c.handoff_enabled !== enabled || Boolean(name && c.name !== name);
    c.handoff_enabled = enabled;
    if (name) c.name = name;
    return changed;
  }
}
