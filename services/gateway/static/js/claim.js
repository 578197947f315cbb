// Claims (docs/contracts.md "Presence and claims"): who is handling a conversation. The first
// agent who replies, or presses Take, becomes its assignee (the queue decides: of two at once,
// one wins and the other is told who has it). The row and the pane show it; an agent who
// starts typing in a conversation someone else handles must first choose "Reply anyway" or
// "Take over". The Handoff list can show All (default), Unassigned or Mine.

import { signedInAgentId } from "./api.js";
import { h } from "./dom.js";
import { avatar } from "./presence.js";

export const FILTERS = [["all", "All"], ["unassigned", "Unassigned"], ["mine", "Mine"]];
let listFilter = "all"; // kept while the page is open (across tabs and chatbots)

export function handledBy(assignee, me = signedInAgentId()) {
  if (!assignee) return null;
  return assignee.agent_id === me ? "You're handling this" : `${assignee.name} is handling this`;
}

/** The rows the list shows under a filter. */
export function filterRows(rows, filter = listFilter, me = signedInAgentId()) {
  if (filter === "unassigned") return rows.filter((r) => !r.assignee);
  if (filter === "mine") return rows.filter((r) => r.assignee && r.assignee.agent_id === me);
  return rows;
}

export function currentFilter() {
  return listFilter;
}

/** "All / Unassigned / Mine" above the list; onChange() re-renders it. */
export function filterControl(onChange) {
  const group = h("div", { class: "claim-filter", role: "group", "aria-label": "Show handoffs" });
  const paint = () => {
    for (const button of group.children) button.setAttribute("aria-pressed", String(button.dataset.filter === listFilter));
  };
  for (const [value, label] of FILTERS) {
    group.append(h("button", { type: "button", class: "btn btn-small", dataset: { filter: value },
      onclick: () => { listFilter = value; paint(); onChange(); } }, label));
  }
  paint();
  return group;
}

/** When a filter hides every row: say so (the seed's empty text is for no handoffs at all). */
export function filteredEmpty(filter = listFilter) {
  const text = filter === "mine" ? "None of the open handoffs is yours." : "Every open handoff is being handled.";
  return h("p", { class: "empty-text claim-filter-empty", text });
}

/** The row's assignee, beside its channel. */
export function rowAssignee(row, me = signedInAgentId()) {
  if (!row.assignee) return null;
  const mine = row.assignee.agent_id === me;
  return h("span", { class: "row-assignee" + (mine ? " row-assignee--mine" : ""), dataset: { agent: row.assignee.agent_id } },
    avatar(row.assignee.name), mine ? "You" : row.assignee.name);
}

/** The pane header's claim: who handles it, or a Take button while nobody does. */
export function paneClaim(pane, c, me = signedInAgentId()) {
  if (c.status !== "handed_off") return null;
  if (c.assignee) {
    return h("span", { class: "pane-claim", dataset: { agent: c.assignee.agent_id } },
      avatar(c.assignee.name), handledBy(c.assignee, me));
  }
  return h("button", { type: "button", class: "btn", "data-action": "take", disabled: Boolean(pane.sending),
    onclick: () => pane.run("take") }, pane.sending === "take" ? "Take…" : "Take");
}

// Conversations whose agent (by assignee) this page already chose to reply alongside.
const replyingAnyway = new Set();

/** The collision guard in the reply box: while someone else handles the conversation, the
 * agent who starts typing is asked first. `blocked()` holds Send until they chose. */
export function replyGuard(pane, c, onChange, me = signedInAgentId()) {
  const other = c.assignee && c.assignee.agent_id !== me ? c.assignee : null;
  const key = other ? `${c.conversation_id}\u001f${other.agent_id}` : null;
  const el = h("div", { class: "claim-guard", role: "alert", hidden: true });
  const blocked = () => Boolean(other) && !replyingAnyway.has(key);
  const show = () => {
    if (!blocked() || !el.hidden) return;
    el.hidden = false;
    el.append(h("p", { class: "claim-guard-text" }, avatar(other.name), `${other.name} is handling this.`),
      h("div", { class: "claim-guard-actions" },
        h("button", { type: "button", class: "btn btn-small", "data-action": "reply-anyway", onclick: () => {
          replyingAnyway.add(key);
          el.hidden = true;
          onChange();
        } }, "Reply anyway"),
        h("button", { type: "button", class: "btn btn-small btn-primary", "data-action": "take-over",
          disabled: Boolean(pane.sending), onclick: () => pane.run("take-over") }, "Take over")));
  };
  return { el, blocked, show };
}
