// Command results that come over the websocket: a command the gateway answered 202 waits
// here for its "command_result" frame.

export class CommandResults {
  constructor() {
    this.waiting = new Map(); // command id -> resolve
    this.unclaimed = new Map(); // command id -> a result that came before anyone waited for it
  }

  get waitingCount() {
    return this.waiting.size;
  }

  /** A "command_result" frame. */
  deliver(result) {
    const id = result.command_id;
    const resolve = this.waiting.get(id);
    if (resolve) {
      this.waiting.delete(id);
      resolve(result);
    } else {
      // It can beat the 202 that makes the pane wait for it: keep it a while.
      this.unclaimed.set(id, result);
      setTimeout(() => this.unclaimed.delete(id), 60000);
    }
  }

  /** What the reply pane waits on: { result: Promise<CommandResult>, cancel() }. */
  await(commandId) {
    if (this.unclaimed.has(commandId)) {
      const result = this.unclaimed.get(commandId);
      this.unclaimed.delete(commandId);
      return { result: Promise.resolve(result), cancel: () => {} };
    }
    return {
      result: new Promise((resolve) => this.waiting.set(commandId, resolve)),
      cancel: () => this.waiting.delete(commandId),
    };
  }
}
