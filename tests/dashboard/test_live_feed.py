"""The per-chatbot ordering rules of static/js/live.js (ChatbotFeed), in Chromium: apply in
order, ignore what a snapshot already holds, wait a moment for updates that arrive out of
order, resync on a gap that stays or a new epoch, and keep what arrives during a resync."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

SCRIPT = """async (steps) => {
  const { ChatbotFeed } = await import('/static/js/live.js');
  const log = [];
  const snapshots = [];  // queued snapshot answers
  let release = null;
  const feed = new ChatbotFeed('demo', {
    fetchSnapshot: () => new Promise((resolve) => { release = () => resolve(snapshots.shift()); }),
    onSnapshot: (s) => log.push(`snapshot ${s.epoch}/${s.seq}`),
    onUpdate: (u, f) => log.push(`apply ${f.epoch}/${f.seq}`),
    reorderWaitMs: 50,
  });
  const frame = (epoch, seq) => ({ type: 'update', chatbot_id: 'demo', epoch, seq, update: { n: seq } });
  for (const [op, a, b] of steps) {
    if (op === 'subscribed') feed.subscribed();
    else if (op === 'update') feed.update(frame(a, b));
    else if (op === 'wait') await new Promise((r) => setTimeout(r, a));
    else if (op === 'snapshot') { snapshots.push({ epoch: a, seq: b }); const r = release; release = null; r(); await feed.syncing; }
  }
  return { log, epoch: feed.epoch, seq: feed.seq, resyncs: feed.resyncs };
}"""


async def test_in_order_updates_apply_and_old_ones_are_ignored(module_page):
    out = await module_page.evaluate(SCRIPT, [
        ["subscribed"], ["update", "e1", 6],  # arrives while the snapshot is in flight
        ["snapshot", "e1", 5],
        ["update", "e1", 6], ["update", "e1", 7], ["update", "e1", 3],
    ])
    assert out["log"] == ["snapshot e1/5", "apply e1/6", "apply e1/7"]
    assert (out["epoch"], out["seq"], out["resyncs"]) == ("e1", 7, 1)


async def test_a_gap_resyncs_and_buffered_updates_after_the_snapshot_apply(module_page):
    out = await module_page.evaluate(SCRIPT, [
        ["subscribed"], ["snapshot", "e1", 5],
        ["update", "e1", 6],
        ["update", "e1", 9],  # 7 and 8 are missing
        ["wait", 150],  # and do not come: resync
        ["update", "e1", 10],  # arrives during the resync
        ["snapshot", "e1", 9],
        ["update", "e1", 11],
    ])
    assert out["log"] == ["snapshot e1/5", "apply e1/6", "snapshot e1/9", "apply e1/10", "apply e1/11"]
    assert out["resyncs"] == 2


async def test_a_new_epoch_resyncs(module_page):
    out = await module_page.evaluate(SCRIPT, [
        ["subscribed"], ["snapshot", "e1", 40],
        ["update", "e2", 1],  # the queue rebuilt its index: numbers start again
        ["snapshot", "e2", 1],
        ["update", "e2", 2],
    ])
    assert out["log"] == ["snapshot e1/40", "snapshot e2/1", "apply e2/2"]
    assert (out["epoch"], out["seq"]) == ("e2", 2)


async def test_a_reconnect_resyncs_even_without_a_gap(module_page):
    out = await module_page.evaluate(SCRIPT, [
        ["subscribed"], ["snapshot", "e1", 1], ["update", "e1", 2],
        ["subscribed"], ["snapshot", "e1", 4], ["update", "e1", 4], ["update", "e1", 5],
    ])
    assert out["log"] == ["snapshot e1/1", "apply e1/2", "snapshot e1/4", "apply e1/5"]


async def test_updates_out_of_order_are_put_back_in_order_without_a_resync(module_page):
    out = await module_page.evaluate(SCRIPT, [
        ["subscribed"], ["snapshot", "e1", 5],
        ["update", "e1", 7], ["update", "e1", 8],  # 6 is late (another queue instance)
        ["update", "e1", 6],
        ["wait", 150],
        ["update", "e1", 9],
    ])
    assert out["log"] == ["snapshot e1/5", "apply e1/6", "apply e1/7", "apply e1/8", "apply e1/9"]
    assert (out["seq"], out["resyncs"]) == (9, 1)


UPDATES_SCRIPT = """async (frames) => {
  const { ChatbotFeed, updateFrames } = await import('/static/js/live.js');
  const log = [];
  const feed = new ChatbotFeed('demo', {
    fetchSnapshot: async () => ({ epoch: 'e1', seq: 5 }),
    onSnapshot: (s) => log.push(`snapshot ${s.epoch}/${s.seq}`),
    onUpdate: (u, f) => log.push(`apply ${f.epoch}/${f.seq}${u.row_upserted ? ' row ' + u.row_upserted.n : ''}`),
    reorderWaitMs: 50,
  });
  await feed.subscribed();
  for (const frame of frames) for (const single of updateFrames(frame)) feed.update(single);
  await new Promise((r) => setTimeout(r, 100));
  return { log, seq: feed.seq, resyncs: feed.resyncs };
}"""


async def test_a_coalesced_updates_frame_applies_each_update_in_its_place(module_page):
    """An "updates" frame (a tick's updates of one chatbot): an update reduced to its place
    still moves the sequence on, so no gap is seen and nothing resyncs."""
    out = await module_page.evaluate(UPDATES_SCRIPT, [
        {"type": "update", "chatbot_id": "demo", "epoch": "e1", "seq": 6, "update": {"epoch": "e1", "seq": 6}},
        {"type": "updates", "chatbot_id": "demo", "updates": [
            {"epoch": "e1", "seq": 7}, {"epoch": "e1", "seq": 8},
            {"epoch": "e1", "seq": 9, "row_upserted": {"n": 9}}]},
        {"type": "updates", "chatbot_id": "demo", "updates": [
            {"epoch": "e1", "seq": 5}, {"epoch": "e1", "seq": 10, "row_upserted": {"n": 10}}]},
    ])
    assert out["log"] == ["snapshot e1/5", "apply e1/6", "apply e1/7", "apply e1/8", "apply e1/9 row 9",
                          "apply e1/10 row 10"]
    assert (out["seq"], out["resyncs"]) == (10, 1)
