"""Cluster mode (issue 9, "What it must show"): several parleyd nodes on one
PostgreSQL and one Redis behind HAProxy, driven over real sockets.

  1. users on different nodes exchange DMs and group messages, every device
     sees the same order, a client resumes on another node losing nothing;
  2. 8 senders spread over 3 nodes into one group: seqs contiguous from 1,
     one order at every device on every node;
  3. a send retried with the same client_msg_id on another node (and raced
     through all 3 nodes at once) gets the original ack and is stored once;
  4. kill -9 of a node while clients stream sends through HAProxy, several
     cycles, then a history check over every send, ack and delivery
     (HistoryChecker below): 0 lost, 0 duplicated, 0 reordered;
  5. Redis restarted and SIGKILLed during traffic: every acknowledged message
     reaches every member device that stays connected, by itself;
     /readyz 503 "bus unavailable" while Redis is down;
  6. PostgreSQL restarted and stopped during traffic: clear retryable errors,
     no false ack, convergence after; /readyz 503 "store unavailable";
  7. presence and typing across nodes, a per-user rate limit shared by the
     nodes, logout on one node closing that login's socket on another;
  plus bad starts: an unreachable database, a node id already leased.

Every test is cluster_only: it is about several nodes. Devices connect to a
chosen node (cluster.node_ws_urls) or through HAProxy (cluster.ws_url, the
node named by X-Parley-Node). Every wait is bounded; nothing asserts on
timing (the rate-limit bound grows with the measured elapsed time).

The session's PostgreSQL is shared by every test (one database each): the
test that stops it starts it again in a `finally`.
"""

import asyncio
import collections
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import websockets.exceptions

from cluster_proc import FALLBACK
from parleyd_proc import CHEAP_HASH, SANITIZER_MARKERS, free_port
from pclient import (WS, Api, Harness, User, assert_contiguous, async_test, cmid, marker_barrier,
                     msg_events, pipeline_send, seq_ids, seqs)

WHY = "several parleyd nodes on PostgreSQL and Redis behind HAProxy"
CLUSTER_NODES = 3        # conftest.py: these tests use a third node (the suite's default is 2)


# --------------------------------------------------------------------------
# helpers


def readyz(base_url, timeout=2.0):
    """(status, body) of GET /readyz; (None, error) when nothing answered."""
    try:
        with urllib.request.urlopen(base_url + "/readyz", timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, ConnectionError, OSError) as e:
        return None, repr(e)


async def wait_readyz(urls, status, reason=None, timeout=20.0):
    """Until every url's /readyz answers `status` (with `reason` in the body)."""
    deadline = time.monotonic() + timeout
    last = {}
    while True:
        last = {u: await asyncio.to_thread(readyz, u, 1.0) for u in urls}
        if all(st == status and (reason is None or reason in body) for st, body in last.values()):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz not {status} {reason or ''!r} within {timeout}s: {last}")
        await asyncio.sleep(0.1)


async def ws_on(h, url, user, name, auth="header", cursors=None, expect_ready=True):
    """A WS to a chosen URL (a node's, or the LB's), closed with the harness."""
    token = user.token if isinstance(user, User) else user
    c = WS(url, token, auth=auth, name=name, cursors=cursors)
    h.clients.append(c)
    await c.connect(expect_ready=expect_ready)
    return c


def node_of(ws):
    """The node HAProxy routed a WS to (X-Parley-Node), or None (direct)."""
    return ws.ws.response_headers.get("X-Parley-Node") if ws.ws is not None else None


def last_seq(ws, conv):
    return {c["id"]: c["last_seq"] for c in ws.ready["conversations"]}[conv]


def node_id_of(node):
    """The node id a parleyd leased, from its `listening` log line."""
    for line in reversed(node.log_text().splitlines()):
        if '"listening"' in line or "listening" in line:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "node" in rec:
                return int(rec["node"])
    raise AssertionError(f"no listening line with a node id in the log:\n{node.log_tail(20)}")


async def until(pred, timeout, what, devices=()):
    """Poll pred (every 50 ms) until true; fail after timeout or as soon as a
    device's task died, saying where every device is."""
    deadline = time.monotonic() + timeout
    while not pred():
        for d in devices:
            if d.task is not None and d.task.done():
                d.task.result()                       # raises its exception
                raise AssertionError(f"{d.name}: its task ended early")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n"
                                 + "\n".join(d.state() for d in devices))
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------
# the history checker


class HistoryChecker:
    """Records every send, ack, error and delivery of a run and checks them
    against the stored history at the end.

    A device is a logical client (one name) that may use several
    connections one after the other: each connection resumes from the
    device's cursor (the last seq it applied) and must deliver exactly
    cursor+1, cursor+2, ... Messages are keyed (conversation,
    client_msg_id); the tests make client_msg_ids unique per run.

    check(history, live) counts:
      lost        acknowledged sends missing from history, and events a
                  device that stayed to the end never got (after its first
                  cursor)
      duplicated  a client_msg_id stored more than once, an event delivered
                  again to a device at or below its cursor, two different
                  acks (or two fresh acks) for one key
      reordered   a delivery above cursor+1 (skipping), a history whose seqs
                  are not 1..N
      mismatched  an ack or a delivery whose (seq, id, ts) differs from the
                  stored event; a stored message whose sender or body is not
                  what was sent
      phantom     a stored message nobody sent
      unacked     sends never acknowledged (the tests retry until acked)
    """

    def __init__(self):
        self.sent = {}                 # (conv, cmid) -> (sender, body)
        self.acks = {}                 # (conv, cmid) -> first ack
        self.fresh = collections.Counter()    # (conv, cmid) -> acks with duplicate false
        self.nacks = 0
        self.errors = collections.Counter()   # error code -> replies
        self.errored = set()           # keys that got an error reply at least once
        self.first_cursor = {}         # (device, conv) -> cursor of its first connection
        self.cursor = {}               # (device, conv) -> last seq applied
        self.delivered = collections.defaultdict(list)   # (device, conv) -> [(seq, id)]
        self.connections = 0
        self.counts = collections.Counter()
        self.details = []

    def _bad(self, kind, text):
        self.counts[kind] += 1
        if len(self.details) < 40:
            self.details.append(f"{kind}: {text}")

    # ---- recording ----
    def on_send(self, conv, cm, sender, body):
        assert (conv, cm) not in self.sent, f"client_msg_id {cm} reused by the test"
        self.sent[(conv, cm)] = (sender, body)

    def on_ack(self, conv, cm, ack):
        key = (conv, cm)
        self.nacks += 1
        if ack.get("conversation") != conv or ack.get("client_msg_id") != cm:
            self._bad("mismatched", f"ack for another message: {ack} (sent {key})")
            return
        if ack.get("duplicate") is False:
            self.fresh[key] += 1
            if self.fresh[key] == 2:
                self._bad("duplicated", f"two acks with duplicate=false for {key}: {ack}")
        prev = self.acks.setdefault(key, ack)
        if (prev["id"], prev["seq"], prev["ts"]) != (ack["id"], ack["seq"], ack["ts"]):
            self._bad("duplicated", f"two different acks for {key}: {prev} then {ack}")

    def on_error(self, conv, cm, reply):
        self.errors[reply.get("code")] += 1
        self.errored.add((conv, cm))

    def device_cursor(self, device, conv):
        return self.cursor.get((device, conv), 0)

    def on_connected(self, device, conv, cursor):
        self.connections += 1
        self.first_cursor.setdefault((device, conv), cursor)
        assert cursor == self.device_cursor(device, conv), (device, conv, cursor)

    def on_delivered(self, device, conv, resumed_from, events):
        """The events of conv one connection of device received, in arrival
        order, after resuming from cursor resumed_from."""
        cur = resumed_from
        got = self.delivered[(device, conv)]
        for e in events:
            s = e["seq"]
            if s <= cur:
                self._bad("duplicated", f"{device}: seq {s} delivered again (cursor {cur}, "
                                        f"connection resumed from {resumed_from})")
                continue
            if s != cur + 1:
                self._bad("reordered", f"{device}: seq {s} delivered after {cur} "
                                       f"(connection resumed from {resumed_from})")
            got.append((s, e["id"]))
            cur = s
        self.cursor[(device, conv)] = cur

    # ---- the check ----
    def check(self, history, live):
        """history: {conv: every stored event}; live: devices that stayed
        connected to the end (each must hold every event after its first
        cursor). Returns (counts, details, summary)."""
        c = collections.Counter({k: 0 for k in ("lost", "duplicated", "reordered", "mismatched",
                                                "phantom", "unacked")})
        c.update(self.counts)
        details = list(self.details)

        def bad(kind, text):
            c[kind] += 1
            if len(details) < 60:
                details.append(f"{kind}: {text}")

        stored = {}
        for conv, evs in history.items():
            s = seqs(evs)
            if s != list(range(1, len(s) + 1)):
                bad("reordered", f"conversation {conv}: stored seqs are not 1..{len(s)}: {s[:10]}...")
            for e in msg_events(evs):
                key = (conv, e["client_msg_id"])
                if key in stored:
                    bad("duplicated", f"{key} stored twice: seqs {stored[key]['seq']} and {e['seq']}")
                    continue
                stored[key] = e
                if key not in self.sent:
                    bad("phantom", f"stored but never sent: {e}")
                elif (e["sender"], e["body"]) != self.sent[key]:
                    bad("mismatched", f"{key} stored as {e['sender']}/{e['body']!r}, sent {self.sent[key]}")
        for key, ack in self.acks.items():
            e = stored.get(key)
            if e is None:
                bad("lost", f"acknowledged but not stored: {ack}")
            elif (e["id"], e["seq"], e["ts"]) != (ack["id"], ack["seq"], ack["ts"]):
                bad("mismatched", f"ack {ack} but stored {e}")
        for key in self.sent:
            if key not in self.acks:
                bad("unacked", f"never acknowledged: {key}")
        ndeliv = 0
        for (dev, conv), got in self.delivered.items():
            ndeliv += len(got)
            hist = {e["seq"]: e["id"] for e in history.get(conv, [])}
            for s, i in got:
                if hist.get(s) != i:
                    bad("mismatched", f"{dev}: delivered seq {s} id {i}, stored {hist.get(s)}")
            if dev in live:
                first = self.first_cursor[(dev, conv)]
                missing = sorted(set(s for s in hist if s > first) - set(s for s, _ in got))
                if missing:
                    bad("lost", f"{dev}: {len(missing)} events never delivered, e.g. seqs {missing[:10]}")
                    c["lost"] += len(missing) - 1
        unknown = sum(1 for k in self.errored if self.fresh[k] == 0 and k in self.acks)
        summary = (f"{len(self.sent)} sends, {self.nacks} acks, {sum(self.errors.values())} error replies "
                   f"{dict(self.errors)}, {ndeliv} deliveries over {self.connections} connections of "
                   f"{len({d for d, _ in self.delivered})} devices; {unknown} sends whose first attempt "
                   f"failed were found committed by a retry (duplicate true): "
                   f"{c['lost']} lost, {c['duplicated']} duplicated, {c['reordered']} reordered, "
                   f"{c['mismatched']} mismatched, {c['phantom']} phantom, {c['unacked']} unacked")
        return c, details, summary

    def assert_clean(self, history, live):
        c, details, summary = self.check(history, live)
        print("history check:", summary)
        assert all(v == 0 for v in c.values()), "history check failed: " + summary + "\n" + "\n".join(details)
        return summary


# --------------------------------------------------------------------------
# a device that streams, dies, reconnects, retries and resumes


class Device:
    """One client device in one conversation, run as a task: keeps a
    WebSocket (reconnecting when it dies, resuming with the cursor the
    HistoryChecker holds for it: `auth` with `cursors`), and, when it is a
    sender, keeps up to `window` sends in flight (at most one new send per
    turn of `pace` seconds). A send that got no ack before its socket died,
    or got `unavailable`, is retried with the same client_msg_id. Everything
    is reported to the checker."""

    RETRYABLE = ("unavailable",)

    def __init__(self, h, checker, name, user, conv, url, send=False, window=4, pace=0.01,
                 connect_timeout=60.0):
        self.h, self.ck, self.name, self.user, self.conv = h, checker, name, user, conv
        self.url = url                  # a URL, or a function returning one
        self.sending = send
        self.window, self.pace, self.connect_timeout = window, pace, connect_timeout
        self.ws = None
        self.node = None
        self.nodes = []                 # where each connection landed
        self.connects = 0
        self.failed_connects = []       # (t, error) of attempts that got no `ready`
        self.start_cursor = 0
        self.pending = collections.deque()   # client_msg_ids to (re)send
        self.inflight = {}              # req -> (cmid, t written)
        self.n = 0
        self.acked = 0
        self.acks_log = []              # (cmid, t written, t seen, ack)
        self.error_log = []             # (cmid, t written, t seen, reply)
        self.closes = []                # (t, code, reason)
        self.retry_at = 0.0
        self.stopping = False
        self.task = None

    def __repr__(self):
        return f"<Device {self.name}>"

    def state(self):
        return (f"  {self.name}: node {self.node} (all {self.nodes}), connected {self.ws is not None}, "
                f"seen {self.seen()}, acked {self.acked}, inflight {len(self.inflight)}, "
                f"pending {len(self.pending)}, closes {[(c, r) for _, c, r in self.closes][-3:]}, "
                f"failed connects {len(self.failed_connects)} {[str(e)[:120] for _, e in self.failed_connects[-2:]]}")

    def seen(self):
        """The highest seq the device has (-1 while disconnected)."""
        if self.ws is None:
            return -1
        return max(self.start_cursor, self.ws.max_seq.get(self.conv, 0))

    @property
    def reconnects(self):
        return max(0, self.connects - 1)

    def body(self, cm):
        return f"body of {cm}"

    async def connect(self):
        deadline = time.monotonic() + self.connect_timeout
        cursor = self.ck.device_cursor(self.name, self.conv)
        while True:
            url = self.url() if callable(self.url) else self.url
            ws = WS(url, self.user.token, auth="first", name=f"{self.name}#{self.connects + 1}",
                    cursors={self.conv: cursor})
            try:
                await ws.connect(timeout=5)
                break
            except (AssertionError, OSError, asyncio.TimeoutError,
                    websockets.exceptions.WebSocketException) as e:
                self.failed_connects.append((time.monotonic(), e))
                await ws.close()
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name}: no connection within {self.connect_timeout}s "
                                         f"({len(self.failed_connects)} attempts), last: {e!r}")
                await asyncio.sleep(0.2)
        self.h.clients.append(ws)
        self.ws = ws
        self.connects += 1
        self.start_cursor = cursor
        self.ck.on_connected(self.name, self.conv, cursor)
        self.node = node_of(ws) or url
        self.nodes.append(self.node)

    def start(self):
        self.task = asyncio.ensure_future(self.run())

    async def run(self):
        while not self.stopping:
            if self.ws is None:
                await self.connect()
            self.take_replies()
            if self.ws.closed.is_set():
                self.lost()
                continue
            try:
                await self.fill()
            except websockets.exceptions.ConnectionClosed:
                pass                            # handled next turn
            await asyncio.sleep(self.pace)

    async def fill(self):
        if time.monotonic() < self.retry_at:
            return
        new = 1
        while len(self.inflight) < self.window:
            if self.pending:
                cm = self.pending.popleft()
            elif self.sending and new:
                new -= 1
                cm = f"{self.name}-{self.n}"
                self.n += 1
                self.ck.on_send(self.conv, cm, self.user.id, self.body(cm))
            else:
                return
            req = self.ws.next_req()
            self.inflight[req] = (cm, time.monotonic())
            await self.ws.send_json({"type": "send", "req": req, "conversation": self.conv,
                                     "client_msg_id": cm, "body": self.body(cm)})

    def take_replies(self):
        for req in list(self.inflight):
            rep = self.ws.reply(req)
            if rep is None:
                continue
            cm, tw = self.inflight.pop(req)
            now = time.monotonic()
            if rep.get("type") == "sent":
                self.acked += 1
                self.acks_log.append((cm, tw, now, rep))
                self.ck.on_ack(self.conv, cm, rep)
            elif rep.get("type") == "error" and rep.get("code") in self.RETRYABLE:
                self.error_log.append((cm, tw, now, rep))
                self.ck.on_error(self.conv, cm, rep)
                self.pending.append(cm)
                self.retry_at = now + 0.2
            else:
                self.error_log.append((cm, tw, now, rep))
                self.ck._bad("bad reply", f"{self.name}: send {cm}: {rep}")
                self.ck.on_error(self.conv, cm, rep)
                self.pending.append(cm)
                self.retry_at = now + 0.2

    def lost(self):
        """The socket died: what was in flight is retried, deliveries checked."""
        ws = self.ws
        self.take_replies()
        self.closes.append((time.monotonic(), ws.close_code, ws.close_reason))
        unanswered = [cm for _, (cm, _) in sorted(self.inflight.items())]
        self.inflight.clear()
        self.pending.extendleft(reversed(unanswered))
        self.ck.on_delivered(self.name, self.conv, self.start_cursor, ws.conv_events(self.conv))
        self.ws = None

    async def quiesce(self, timeout=60):
        """Stop new sends; wait until every send was acknowledged."""
        self.sending = False
        await until(lambda: not self.pending and not self.inflight, timeout,
                    f"{self.name}: every send acknowledged", [self])

    async def finish(self):
        """Stop the task, close the socket, hand the deliveries over."""
        self.stopping = True
        if self.task is not None:
            await asyncio.wait_for(self.task, 70)
        if self.ws is not None:
            self.take_replies()
            await self.ws.close()
            self.ck.on_delivered(self.name, self.conv, self.start_cursor, self.ws.conv_events(self.conv))
            self.ws = None


async def acks_progress(devices, n, timeout, what):
    """Until every device in `devices` has n more acks than now."""
    goal = {d: d.acked + n for d in devices}
    await until(lambda: all(d.acked >= goal[d] for d in devices), timeout, what, devices)


async def converge(devices, senders, api, conv, timeout=60):
    """Stop sending, wait for every ack, then for every device to hold the
    stored history's last event; returns the history."""
    for d in senders:
        d.sending = False
    await until(lambda: all(not d.pending and not d.inflight for d in senders), timeout,
                "every send acknowledged", devices)
    hist = await api.history_all(senders[0].user, conv)
    last = hist[-1]["seq"]
    await until(lambda: all(d.seen() >= last for d in devices), timeout,
                f"every device has seq {last}", devices)
    for d in devices:
        await d.finish()
    return hist


# --------------------------------------------------------------------------
# 1. cross-node DMs and groups, one order, resume on another node


@pytest.mark.cluster_only(WHY)
@async_test(120)
async def test_cross_node_dm_and_group_one_order_and_resume_on_another_node(server):
    U = server.node_ws_urls
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "xn")
        dm = (await api.open_dm(alice, bob.id))["id"]
        grp = (await api.create_group(alice, [bob.id, carol.id], title="across nodes"))["id"]
        a0 = await ws_on(h, U[0], alice, "alice@node0")
        a2 = await ws_on(h, U[2], alice, "alice@node2")
        b1 = await ws_on(h, U[1], bob, "bob@node1")
        b0 = await ws_on(h, U[0], bob, "bob@node0")
        c2 = await ws_on(h, U[2], carol, "carol@node2")
        c1 = await ws_on(h, U[1], carol, "carol@node1")
        base = {dm: last_seq(a0, dm), grp: last_seq(a0, grp)}
        members = {dm: [a0, a2, b1, b0], grp: [a0, a2, b1, b0, c2, c1]}

        def stream(ws, conv, tag, n):
            return pipeline_send(ws, conv, [f"{tag} {i}" for i in range(n)], window=5)

        res = await asyncio.gather(stream(a0, dm, "alice dm", 40), stream(b1, dm, "bob dm", 40),
                                   stream(a0, grp, "alice g", 30), stream(b1, grp, "bob g", 30),
                                   stream(c2, grp, "carol g", 30))
        acks = {dm: res[0] + res[1], grp: res[2] + res[3] + res[4]}
        ends = {}
        for conv, al in acks.items():
            ends[conv] = base[conv] + len(al)
            assert sorted(a["seq"] for a in al) == list(range(base[conv] + 1, ends[conv] + 1)), \
                f"conversation {conv}: ack seqs from three nodes are not one contiguous range"
            assert len({a["id"] for a in al}) == len(al), "duplicate message ids across nodes"
        for r in res:
            s = [a["seq"] for a in r]
            assert s == sorted(s), f"one connection's sends were reordered: {s}"

        for conv, devs in members.items():
            for d in devs:
                await d.wait_seq(conv, ends[conv], timeout=30)
            hist = await Api(server.node_urls[2], h.session).history_all(carol if conv == grp else bob, conv)
            assert_contiguous(seqs(hist), 1, f"history of {conv}")
            ref = seq_ids(hist)[base[conv]:]
            assert sorted(ref) == sorted((a["seq"], a["id"]) for a in acks[conv])
            for d in devs:
                assert seq_ids(d.conv_events(conv)) == ref, \
                    f"{d.name} saw another order of conversation {conv} than the store"

        # Resume on another node while messages keep flowing: bob leaves
        # node 0 and comes back on node 1 (auth with cursors); carol leaves
        # node 2 and comes back on node 0 (header auth, then `sync` first).
        cur_b = {dm: b0.max_seq[dm], grp: b0.max_seq[grp]}
        cur_c = {grp: c2.max_seq[grp]}
        await b0.close()
        await c2.close()
        stream_acks = []
        started = asyncio.Event()

        def on_ack(i, x):
            stream_acks.append(x)
            if len(stream_acks) >= 30:
                started.set()

        streams = asyncio.gather(
            pipeline_send(a2, dm, [f"live dm {i}" for i in range(120)], window=4, on_ack=on_ack, timeout=60),
            pipeline_send(a2, grp, [f"live g {i}" for i in range(120)], window=4, on_ack=on_ack, timeout=60),
            pipeline_send(c1, grp, [f"carol live {i}" for i in range(80)], window=4, on_ack=on_ack, timeout=60))
        await asyncio.wait_for(started.wait(), 30)
        b1x = await ws_on(h, U[1], bob, "bob@node1-resumed", auth="first", cursors=cur_b)
        c0x = await ws_on(h, U[0], carol, "carol@node0-resumed")
        n0 = len(c0x.msgs)
        await c0x.send_json({"type": "sync", "cursors": {str(grp): cur_c[grp]}})
        live_dm, live_g, carol_live = await asyncio.wait_for(streams, 90)
        ends = {dm: max(a["seq"] for a in live_dm), grp: max(a["seq"] for a in live_g + carol_live)}
        for conv, devs in {dm: [a0, b1, b1x], grp: [a0, b1, b1x, c1, c0x]}.items():
            for d in devs:
                await d.wait_seq(conv, ends[conv], timeout=60)
        await c0x.wait_for(lambda m: m.get("type") == "synced" and m.get("conversation") == grp,
                           start=n0, what="synced")
        for conv in (dm, grp):
            hist = await api.history_all(alice, conv)
            assert_contiguous(seqs(hist), 1, f"history of {conv}")
            full = seq_ids(hist)
            got = seq_ids(b1x.conv_events(conv))
            assert got == full[cur_b[conv]:], \
                f"bob resumed on another node from {cur_b[conv]} in {conv}: got seqs " \
                f"{[s for s, _ in got][:5]}..{[s for s, _ in got][-3:]} (len {len(got)}), " \
                f"expected {cur_b[conv] + 1}..{ends[conv]}"
            for d in (a0, b1) + ((c1,) if conv == grp else ()):
                assert seq_ids(d.conv_events(conv)) == full[base[conv]:], f"{d.name}: order differs"
        got = seq_ids(c0x.conv_events(grp))
        assert got == seq_ids(await api.history_all(alice, grp))[cur_c[grp]:], \
            f"carol resumed with sync on another node: seqs {[s for s, _ in got][:5]}... len {len(got)}"
        for d in (a0, a2, b1, c1, b1x, c0x):
            assert not d.errors(), f"{d.name}: {d.errors()}"


# --------------------------------------------------------------------------
# 2. eight senders over three nodes


SENDERS = 8
PER_SENDER = 100


@pytest.mark.cluster_only(WHY)
@async_test(150)
async def test_eight_senders_over_three_nodes_one_order(server):
    U = server.node_ws_urls
    async with Harness(server) as h:
        api = h.api
        users = await api.register_many(SENDERS, "ei")
        grp = (await api.create_group(users[0], [u.id for u in users[1:]], title="eight"))["id"]
        senders = [await ws_on(h, U[i % 3], u, f"s{i}@node{i % 3}") for i, u in enumerate(users)]
        extra = [await ws_on(h, U[1], users[0], "u0-2nd@node1"),
                 await ws_on(h, U[2], users[0], "u0-3rd@node2"),
                 await ws_on(h, U[0], users[1], "u1-2nd@node0")]
        base = last_seq(senders[0], grp)
        assert base == 1, "the group's log starts with its created event"

        results = await asyncio.gather(*[
            pipeline_send(c, grp, [f"s{i} m{k}" for k in range(PER_SENDER)], window=20, timeout=60)
            for i, c in enumerate(senders)])
        acks = [a for r in results for a in r]
        total = SENDERS * PER_SENDER
        assert sorted(a["seq"] for a in acks) == list(range(2, 2 + total)), \
            "ack seqs of 8 senders on 3 nodes are not exactly 2..801"
        assert len({a["id"] for a in acks}) == total, "duplicate message ids"
        assert all(a["duplicate"] is False for a in acks)
        for i, r in enumerate(results):
            s = [a["seq"] for a in r]
            assert s == sorted(s), f"sender {i}: its sends were reordered"

        last = 1 + total
        for c in senders + extra:
            await c.wait_seq(grp, last, timeout=60)
        hist = await Api(server.node_urls[1], h.session).history_all(users[4], grp)
        assert_contiguous(seqs(hist), 1, "history seqs")
        assert len(hist) == last
        ref = seq_ids(hist)[1:]
        assert sorted(ref) == sorted((a["seq"], a["id"]) for a in acks)
        for c in senders + extra:
            assert seq_ids(c.conv_events(grp)) == ref, f"{c.name} saw another order than the store"
        by_seq = {a["seq"]: a for a in acks}
        for e in msg_events(senders[5].conv_events(grp)):
            a = by_seq[e["seq"]]
            assert (e["id"], e["ts"], e["client_msg_id"]) == (a["id"], a["ts"], a["client_msg_id"]), (e, a)


# --------------------------------------------------------------------------
# 3. idempotency across nodes


def _key(ack):
    return (ack["id"], ack["seq"], ack["ts"])


def _count(events, sender, cm):
    return sum(1 for e in events if e.get("kind") == "message"
               and e.get("sender") == sender and e.get("client_msg_id") == cm)


@pytest.mark.cluster_only(WHY)
@async_test(90)
async def test_retry_on_another_node_returns_the_same_ack_and_stores_once(server):
    U = server.node_ws_urls
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "idx")
        cid = (await h.api.open_dm(alice, bob.id))["id"]
        a = [await ws_on(h, U[i], alice, f"alice@node{i}") for i in range(3)]
        b = [await ws_on(h, U[i], bob, f"bob@node{i}") for i in (1, 2)]
        apis = [Api(u, h.session) for u in server.node_urls]
        X = cmid("xnode")

        first = await a[0].send_msg(cid, "exactly once", X)
        assert first["duplicate"] is False, first

        def same(ack, where):
            assert ack.get("type", "sent") == "sent", f"{where}: {ack}"
            assert ack.get("duplicate") is True, f"{where}: retry not flagged duplicate: {ack}"
            assert _key(ack) == _key(first), f"{where}: retry got another ack {ack}, original {first}"
            assert ack["client_msg_id"] == X and ack["conversation"] == cid, ack

        same(await a[1].send_msg(cid, "exactly once", X), "WebSocket on node 1")
        same(await a[2].send_msg(cid, "a different body", X), "WebSocket on node 2 (other body)")
        for i, api in enumerate(apis):
            r = await api.req("POST", f"/api/v1/conversations/{cid}/messages", token=alice.token,
                              json_body={"client_msg_id": X, "body": "exactly once"})
            assert r.status == 200, f"HTTP retry on node {i}: {r!r}"
            same(r.body, f"HTTP on node {i}")
        marker = await a[2].send_msg(cid, "marker")
        assert marker["seq"] == first["seq"] + 1, f"a retry took a seq: {marker} after {first}"

        # The same key raced through all three nodes at once (plus HTTP on
        # one of them): one message, one ack, exactly one duplicate=false.
        raced = []
        for k in range(10):
            Y = cmid(f"race{k}")
            raced.append(Y)
            body = f"race {k}"
            http = apis[k % 3].req("POST", f"/api/v1/conversations/{cid}/messages", token=alice.token,
                                   json_body={"client_msg_id": Y, "body": body})
            res = await asyncio.gather(*[c.send_msg(cid, body, Y) for c in a], http)
            acks = list(res[:3]) + [res[3].body]
            assert res[3].status in (200, 201), res[3]
            assert len({_key(x) for x in acks}) == 1, f"round {k}: different acks {acks}"
            fresh = [x for x in acks if x["duplicate"] is False]
            assert len(fresh) == 1, f"round {k}: expected exactly one original ack: {acks}"
            assert (res[3].status == 201) == (res[3].body["duplicate"] is False), res[3]

        end = await a[1].send_msg(cid, "end")
        for c in a + b:
            await c.wait_seq(cid, end["seq"], timeout=30)
            for key in [X] + raced:
                n = _count(c.conv_events(cid), alice.id, key)
                assert n == 1, f"{c.name} received {key} {n} times"
        hist = await apis[1].history_all(bob, cid)
        assert_contiguous(seqs(hist), 1, "history seqs")
        for key in [X] + raced:
            assert _count(hist, alice.id, key) == 1, f"{key} stored {_count(hist, alice.id, key)} times"
        stored = [e for e in hist if e.get("client_msg_id") == X][0]
        assert _key(stored) == _key(first) and stored["body"] == "exactly once", stored
        assert len(msg_events(hist)) == 1 + 1 + len(raced) + 1


# --------------------------------------------------------------------------
# 4. kill -9 of a node, several cycles, with the history check


KILL_CYCLES = 3


@pytest.mark.cluster_only(WHY)
@async_test(170)
async def test_kill9_node_cycles_lose_nothing(server):
    async with Harness(server) as h:
        api = h.api
        users = await api.register_many(6, "k9")
        conv = (await api.create_group(users[0], [u.id for u in users[1:]], title="kill -9"))["id"]
        ck = HistoryChecker()

        def lb():
            return server.ws_url

        senders = [Device(h, ck, f"s{i}", u, conv, lb, send=True, window=4, pace=0.01)
                   for i, u in enumerate(users)]
        readers = [Device(h, ck, f"r{i}", users[i], conv, lb) for i in range(3)]
        devices = senders + readers
        for d in devices:                       # one by one: leastconn spreads them
            await d.connect()
        spread = collections.Counter(d.node for d in devices)
        assert set(spread) == {"node0", "node1", "node2"}, f"HAProxy did not spread the clients: {spread}"
        for d in devices:
            d.start()

        for cycle in range(KILL_CYCLES):
            k = cycle % len(server.nodes)
            name = f"node{k}"
            await acks_progress(senders, 15, 60, f"cycle {cycle}: traffic before the kill")
            victims = [d for d in devices if d.node == name and d.ws is not None]
            assert victims, f"cycle {cycle}: no client on {name}: " + str([(d.name, d.node) for d in devices])
            before = {d: d.connects for d in victims}
            server.nodes[k].kill()
            # its clients see their socket die, reconnect through HAProxy
            # (onto a live node), retry what was unacknowledged and resume
            await until(lambda: all(d.connects > before[d] for d in victims), 60,
                        f"cycle {cycle}: the clients of {name} reconnected", devices)
            for d in victims:
                assert d.closes, f"{d.name}: reconnected without its socket dying?"
                assert d.node != name, f"{d.name}: HAProxy sent it back to the dead {name}"
            await acks_progress(senders, 15, 60, f"cycle {cycle}: traffic after the kill")
            await asyncio.to_thread(server.start)      # the node again, back in rotation
            print(f"cycle {cycle}: killed {name} under {len(victims)} clients "
                  f"({[d.name for d in victims]}); acks so far {sum(d.acked for d in senders)}")
        await acks_progress(senders, 10, 60, "traffic after the last restart")

        hist = await converge(devices, senders, api, conv)
        summary = ck.assert_clean({conv: hist}, live={d.name for d in devices})
        print(f"kill -9 x{KILL_CYCLES}: {summary}")


# --------------------------------------------------------------------------
# 5. Redis restarted and SIGKILLed during traffic


def spread_devices(h, ck, server, users, conv, pace=0.02):
    """User i sends from node i and reads on the two other nodes: every
    message crosses nodes."""
    n = len(server.nodes)
    senders, readers = [], []
    for i, u in enumerate(users):
        senders.append(Device(h, ck, f"u{i}@node{i % n}", u, conv, server.node_ws_urls[i % n],
                              send=True, window=4, pace=pace))
        for j in range(1, n):
            k = (i + j) % n
            readers.append(Device(h, ck, f"u{i}-r@node{k}", u, conv, server.node_ws_urls[k]))
    return senders, readers


@pytest.mark.cluster_only(WHY)
@async_test(150)
async def test_redis_restart_and_sigkill_during_traffic_lose_no_delivery(server):
    async with Harness(server) as h:
        api = Api(server.node_urls[0], h.session)
        users = await api.register_many(3, "rd")
        conv = (await api.create_group(users[0], [u.id for u in users[1:]], title="redis"))["id"]
        ck = HistoryChecker()
        senders, readers = spread_devices(h, ck, server, users, conv)
        devices = senders + readers
        for d in devices:
            await d.connect()
            d.start()
        await acks_progress(senders, 20, 60, "traffic before Redis restarts")

        # 1. a restart (SIGTERM, start on the same port, empty)
        await asyncio.to_thread(server.redis.restart)
        await acks_progress(senders, 20, 60, "traffic after the Redis restart")
        await wait_readyz(server.node_urls, 200, timeout=30)

        # 2. SIGKILL; sends keep being acknowledged while it is gone; then
        # the traffic stops and Redis starts again: every device gets what
        # it missed with no new traffic to reveal the gap (resync) and no
        # client action
        server.redis.kill()
        down = await wait_readyz(server.node_urls, 503, "bus unavailable", timeout=20)
        await acks_progress(senders, 20, 60, "sends acknowledged while Redis is down")
        for d in senders:
            d.sending = False
        await until(lambda: all(not d.pending and not d.inflight for d in senders), 60,
                    "every send made while Redis is down acknowledged", devices)
        quiet_last = max(ack["seq"] for d in senders for _, _, _, ack in d.acks_log)
        behind = sorted(d.name for d in devices if d.seen() < quiet_last)
        await asyncio.to_thread(server.redis.start)
        await until(lambda: all(d.seen() >= quiet_last for d in devices), 30,
                    f"every device has seq {quiet_last} (sent while Redis was down) after Redis came "
                    f"back, with no further traffic", devices)
        await wait_readyz(server.node_urls, 200, "ready", timeout=30)
        for d in senders:
            d.sending = True
        await acks_progress(senders, 20, 60, "traffic after Redis came back")

        hist = await converge(devices, senders, api, conv, timeout=60)
        for d in devices:
            assert d.reconnects == 0 and not d.closes, \
                f"{d.name}: its connection was closed ({d.closes}): delivery must recover " \
                f"without the client reconnecting"
        summary = ck.assert_clean({conv: hist}, live={d.name for d in devices})
        print(f"redis restart + kill: readyz while down {down}; devices behind when Redis came back "
              f"{behind}; {summary}")


# --------------------------------------------------------------------------
# 6. PostgreSQL restarted and stopped during traffic


@pytest.mark.cluster_only(WHY)
@async_test(170)
async def test_postgres_restart_and_outage_no_false_ack_and_convergence(server):
    pg = server.pg
    try:
        async with Harness(server) as h:
            api = Api(server.node_urls[0], h.session)
            users = await api.register_many(3, "pgr")
            conv = (await api.create_group(users[0], [u.id for u in users[1:]], title="pg"))["id"]
            ck = HistoryChecker()
            senders, readers = spread_devices(h, ck, server, users, conv)
            devices = senders + readers
            for d in devices:
                d.connect_timeout = 90
                await d.connect()
                d.start()
            await acks_progress(senders, 20, 60, "traffic before PostgreSQL restarts")

            # 1. a restart (fast shutdown, start) under traffic
            await asyncio.to_thread(pg.restart)
            await wait_readyz(server.node_urls, 200, timeout=40)
            await acks_progress(senders, 20, 60, "traffic after the PostgreSQL restart")

            # 2. an outage: stopped, traffic against it, started again
            await asyncio.to_thread(pg.stop)
            down_at = time.monotonic()           # no commit can happen from here ...
            down = await wait_readyz(server.node_urls, 503, "store unavailable", timeout=20)
            acked_before = sum(d.acked for d in senders)
            n_err = sum(len(d.error_log) for d in senders)
            n_close = sum(len(d.closes) for d in devices)
            await until(lambda: sum(len(d.error_log) for d in senders) > n_err
                        or sum(len(d.closes) for d in devices) > n_close, 20,
                        "a clear error (unavailable, or close 1013) while PostgreSQL is down", devices)
            await asyncio.sleep(1.0)
            up_at = time.monotonic()             # ... to here
            await asyncio.to_thread(pg.start)
            await wait_readyz(server.node_urls, 200, "ready", timeout=40)
            await acks_progress(senders, 20, 90, "traffic after PostgreSQL came back")

            hist = await converge(devices, senders, api, conv, timeout=90)

            # no false ack: nothing sent after the database stopped was
            # acknowledged before it started again
            false_acks = [(d.name, cm, ack) for d in senders for cm, tw, ts, ack in d.acks_log
                          if tw >= down_at and ts < up_at]
            assert not false_acks, f"acknowledged while PostgreSQL was down: {false_acks[:5]}"
            bad_errors = [(d.name, rep) for d in senders for _, _, _, rep in d.error_log
                          if rep.get("code") != "unavailable"]
            assert not bad_errors, f"errors other than `unavailable`: {bad_errors[:5]}"
            no_hint = [(d.name, rep) for d in senders for _, _, _, rep in d.error_log
                       if rep.get("retry_after") != 1]
            assert not no_hint, f"`unavailable` without retry_after 1 (audit G3): {no_hint[:5]}"
            bad_closes = [(d.name, code, reason) for d in devices for _, code, reason in d.closes
                          if code != 1013]
            assert not bad_closes, f"closes other than 1013 (try again later): {bad_closes[:5]}"
            summary = ck.assert_clean({conv: hist}, live={d.name for d in devices})
            print(f"postgres restart + outage: acks before the outage {acked_before}; readyz while down "
                  f"{down}; errors {sum(len(d.error_log) for d in senders)}, closes "
                  f"{sum(len(d.closes) for d in devices)}, reconnects {sum(d.reconnects for d in devices)}; "
                  f"{summary}")
    finally:
        if not pg.running():
            pg.start()                           # the session's database, for the other tests


# --------------------------------------------------------------------------
# 6b. the load balancer fails open (audit T 2)


def lb_has_no_ready_node(server):
    return not any(st.startswith("UP") for st in server.haproxy.server_states().values())


def lb_node(r):
    """The node HAProxy sent a REST request to (X-Parley-Node; HAProxy
    lowercases header names)."""
    return {k.lower(): v for k, v in r.headers.items()}.get("x-parley-node")


async def lb_setup(h, server, prefix):
    """Two users and their DM, made through the lb; a REST send helper."""
    lb = Api(server.base_url, h.session)
    a, b = await lb.register_many(2, prefix)
    dm = (await lb.open_dm(a, b.id))["id"]

    async def send(user, text):
        return await lb.req("POST", f"/api/v1/conversations/{dm}/messages", token=user.token,
                            json_body={"client_msg_id": cmid(), "body": text})
    return lb, a, b, dm, send


async def lb_back_to_ready_nodes(server, lb, user):
    """Every node ready and in `parleyd` again, and the lb sends there."""
    await wait_readyz(server.node_urls, 200, "ready", timeout=40)
    await until(lambda: all(st.startswith("UP") for st in server.haproxy.server_states().values()),
                15, f"every node back in `parleyd`: {server.haproxy.server_states()}")
    r = await lb.expect(200, "GET", "/api/v1/me", token=user.token)
    assert r.body["id"] == user.id
    await until(lambda: server.haproxy.routes()[-1:] == [("parleyd", lb_node(r))], 5,
                f"the last request logged as sent by `parleyd`: {server.haproxy.routes()[-3:]}")


@pytest.mark.cluster_only(WHY)
@async_test(120)
async def test_lb_fails_open_while_redis_is_down(server):
    """While Redis is down every node's /readyz is 503, so HAProxy has no
    ready node; it still sends requests to the nodes that are running
    (deploy/haproxy.cfg, backend parleyd_fallback), where commits go on:
    through the lb a REST send is 201 and a new WebSocket authenticates
    (before: HAProxy's HTML 503 for both). A node that dies meanwhile gets
    nothing: its refused connects are retried on the others."""
    async with Harness(server) as h:
        lb, a, b, dm, lb_send = await lb_setup(h, server, "fo")

        server.redis.kill()
        await wait_readyz(server.node_urls, 503, "bus unavailable", timeout=20)
        await until(lambda: lb_has_no_ready_node(server), 15,
                    f"HAProxy to take every node out of `parleyd`: {server.haproxy.server_states()}")
        served = []
        for i in range(6):
            r = await lb_send(a, f"redis down {i}")
            assert r.status == 201 and r.body["type"] == "sent", f"REST send via the lb, Redis down: {r!r}"
            served.append(lb_node(r))
        assert set(served) <= {"node0", "node1", "node2"} and len(set(served)) >= 2, served
        ws = await ws_on(h, server.ws_url, b, "b@lb")          # auth header, waits for `ready`
        assert node_of(ws) in ("node0", "node1", "node2"), node_of(ws)
        rep = await ws.request({"type": "send", "conversation": dm, "client_msg_id": cmid(),
                                "body": "ws via the lb, Redis down"})
        assert rep["type"] == "sent", rep

        server.nodes[2].kill()
        for i in range(9):
            r = await lb_send(a, f"redis down, node 2 dead {i}")
            assert r.status == 201, f"REST send via the lb, Redis down, node 2 killed: {r!r}"
            assert lb_node(r) in ("node0", "node1"), r.headers
        await asyncio.to_thread(server.haproxy.wait_state, "node2", "DOWN", 10, FALLBACK)
        assert {be for be, _ in server.haproxy.routes()[-15:]} == {FALLBACK}, server.haproxy.log_tail()

        await asyncio.to_thread(server.start)                 # Redis, then node 2 again
        await lb_back_to_ready_nodes(server, lb, a)
        r = await lb.expect(200, "GET", f"/api/v1/conversations/{dm}/messages?after=0&limit=100",
                            token=a.token)
        texts = [e.get("body") for e in msg_events(r.body["events"])]
        assert len(texts) == 16 and "ws via the lb, Redis down" in texts, texts


@pytest.mark.cluster_only(WHY)
@async_test(120)
async def test_lb_fails_open_while_postgres_is_down(server):
    """While PostgreSQL is down no node is ready either; through the lb a
    REST call gets the node's documented JSON 503 `unavailable`, which
    clients know to retry (before: HAProxy's HTML 503 page)."""
    pg = server.pg
    async with Harness(server) as h:
        lb, a, b, dm, lb_send = await lb_setup(h, server, "fopg")
        await asyncio.to_thread(pg.stop)
        try:
            await wait_readyz(server.node_urls, 503, "store unavailable", timeout=20)
            await until(lambda: lb_has_no_ready_node(server), 15,
                        f"HAProxy to take every node out of `parleyd`: {server.haproxy.server_states()}")
            for what, call in (("GET /api/v1/me", lb.req("GET", "/api/v1/me", token=a.token)),
                               ("REST send", lb_send(a, "pg down")),
                               ("login", lb.req("POST", "/api/v1/auth/login",
                                                json_body={"username": b.username,
                                                           "password": b.password}))):
                r = await call
                assert r.status == 503 and r.code == "unavailable", \
                    f"{what} via the lb, PostgreSQL down: {r!r}"
                ctype = {k.lower(): v for k, v in r.headers.items()}.get("content-type", "")
                assert ctype.startswith("application/json") and lb_node(r), r.headers
        finally:
            await asyncio.to_thread(pg.start)
        await lb_back_to_ready_nodes(server, lb, a)


# --------------------------------------------------------------------------
# 7. presence, typing, rate limits, logout across nodes


FAST = ["--presence-timeout", "2", "--presence-coalesce", "100", "--typing-ttl", "1500"]


def presence_of(ws, uid, start=0):
    return [m for m in ws.msgs[start:] if isinstance(m, dict) and m.get("type") == "presence"
            and m.get("user") == uid]


async def heartbeats(conns, stop):
    """Keeps sessions alive (presence-timeout is 2 s here) until stop is set;
    a connection removed from the list stops heartbeating."""
    while not stop.is_set():
        for c in list(conns):
            if not c.closed.is_set():
                try:
                    await c.send_json({"type": "heartbeat"})
                except websockets.exceptions.ConnectionClosed:
                    pass
        try:
            await asyncio.wait_for(stop.wait(), 0.3)
        except asyncio.TimeoutError:
            pass


def typing_of(ws, start=0):
    return [m for m in ws.msgs[start:] if isinstance(m, dict) and m.get("type") == "typing"]


@pytest.mark.cluster_only(WHY)
@async_test(90)
async def test_presence_and_typing_cross_nodes(server_factory):
    server = server_factory(FAST)
    U = server.node_ws_urls
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "pt")
        cid = (await h.api.open_dm(alice, bob.id))["id"]
        b = await ws_on(h, U[1], bob, "bob@node1")
        beating = [b]
        stop = asyncio.Event()
        hb = asyncio.ensure_future(heartbeats(beating, stop))
        try:
            a0 = await ws_on(h, U[0], alice, "alice@node0")
            beating.append(a0)
            await b.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == alice.id
                             and m.get("status") == "online", what="alice (node 0) online at bob (node 1)")
            r = await b.request({"type": "presence_query", "users": [alice.id]})
            assert r["users"] and r["users"][0]["status"] == "online", f"presence_query on node 1: {r}"
            a2 = await ws_on(h, U[2], alice, "alice@node2")
            beating.append(a2)

            # typing on node 0 reaches node 1, not the typist's devices
            n = len(b.msgs)
            await a0.send_json({"type": "typing", "conversation": cid, "state": "start"})
            m = await b.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "start",
                                 start=n, what="typing start from node 0")
            assert m["user"] == alice.id and m["conversation"] == cid, m
            m = await b.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "stop",
                                 start=n, timeout=10, what="typing expired (server-sent stop)")
            assert m["user"] == alice.id, m
            # (every node has swept its expired entry: see the refresh test below)
            await asyncio.sleep(0.6)
            n = len(b.msgs)
            await a0.send_json({"type": "typing", "conversation": cid, "state": "start"})
            await b.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "start",
                             start=n, what="typing start again after it expired")
            n = len(b.msgs)
            await a0.send_json({"type": "typing", "conversation": cid, "state": "stop"})
            await b.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "stop",
                             start=n, what="explicit typing stop")
            await a2.ping()
            await a0.ping()
            # absence barrier (pclient.py): a2.ping() covers node 2's queue,
            # not node 0's typing publishes still on the bus. a0's marker
            # message, sent after every typing frame above, is published by
            # node 0 after them: a typing frame reaching a2 would come first.
            await marker_barrier(cid, [a0], [a0, a2])
            for t in (a0, a2):
                assert not typing_of(t), f"{t.name}: the typist's own device got typing frames"
            # and the other way: bob types on node 1, alice's devices on 0 and 2 see it
            await b.send_json({"type": "typing", "conversation": cid, "state": "start"})
            for t in (a0, a2):
                m = await t.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "start",
                                     what="bob's typing at alice")
                assert m["user"] == bob.id, m

            # both of alice's devices stay connected but stop heartbeating:
            # offline after presence-timeout, announced on node 1; a
            # heartbeat on node 2 brings her back online
            n = len(b.msgs)
            beating.remove(a0)
            beating.remove(a2)
            await b.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == alice.id
                             and m.get("status") == "offline", start=n, timeout=15,
                             what="alice offline after her devices stopped heartbeating")
            n = len(b.msgs)
            beating.append(a2)
            await b.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == alice.id
                             and m.get("status") == "online", start=n, timeout=15,
                             what="alice online again (heartbeat on node 2)")

            # presence merged over nodes: node 0's device goes, node 2's stays
            n = len(b.msgs)
            await a0.close()
            await asyncio.sleep(3.0)                  # > presence-timeout (2 s)
            await b.ping()
            assert all(m["status"] == "online" for m in presence_of(b, alice.id, n)), \
                f"alice still has a device on node 2: {presence_of(b, alice.id, n)}"
            r = await b.request({"type": "presence_query", "users": [alice.id]})
            assert r["users"][0]["status"] == "online", r

            # the last device disconnects: offline with last_seen, pushed to node 1
            n = len(b.msgs)
            before = int(time.time() * 1000)
            beating.remove(a2)
            await a2.close()
            m = await b.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == alice.id
                                 and m.get("status") == "offline", start=n, timeout=15,
                                 what="alice offline after her last device (node 2) disconnected")
            assert before - 3000 <= m["last_seen"] <= int(time.time() * 1000) + 1000, m
            r = await Api(server.node_urls[2], h.session).expect(
                200, "GET", f"/api/v1/presence?users={alice.id}", token=bob.token)
            assert r.body["users"][0]["status"] == "offline", f"REST presence on node 2: {r.body}"
        finally:
            stop.set()
            await hb


@pytest.mark.cluster_only(WHY)
@async_test(90)
async def test_users_of_a_killed_node_go_offline_after_the_presence_timeout(server_factory):
    """A node dies (SIGKILL): its users' views stop counting about
    --presence-timeout after its last publication, as for a session whose
    heartbeats stopped. They lasted 20 s longer (timeout + 20 s: 80 s
    after a crash at the default 60 s, 24 s here at 4 s; audit B)."""
    server = server_factory(["--presence-timeout", "4", "--presence-coalesce", "100"])
    U = server.node_ws_urls
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "pk")
        await h.api.open_dm(alice, bob.id)
        b = await ws_on(h, U[1], bob, "bob@node1")
        a = await ws_on(h, U[0], alice, "alice@node0")
        stop = asyncio.Event()
        hb = asyncio.ensure_future(heartbeats([a, b], stop))
        try:
            await b.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == alice.id
                             and m.get("status") == "online", what="alice (node 0) online at bob (node 1)")
            await asyncio.sleep(1.5)                  # a refresh or two of alice's view
            n = len(b.msgs)
            killed = time.monotonic()
            server.nodes[0].kill()
            await b.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == alice.id
                             and m.get("status") == "offline", start=n, timeout=20,
                             what="alice offline after her node died")
            took = time.monotonic() - killed
            # the view lasts the timeout (4 s) from its last publication,
            # noticed within a sweep (0.5 s) and announced after a window
            assert took < 10, f"alice went offline {took:.1f} s after her node died (timeout 4 s)"
        finally:
            stop.set()
            await hb
        await asyncio.to_thread(server.start)         # node 0 again, for the teardown


@pytest.mark.cluster_only(WHY)
@async_test(90)
async def test_a_restarted_node_does_not_bring_back_its_dead_users(server_factory):
    """Audit G4 F1: a node killed and started again with the same id made
    its vanished users online again (their views of the dead process had a
    minute left) on every node, and their push notifications were dropped
    as "online". A view published before its node's current process
    started no longer counts."""
    server = server_factory(["--presence-coalesce", "100"])
    U = server.node_ws_urls
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "rs")
        await h.api.open_dm(alice, bob.id)
        b = await ws_on(h, U[1], bob, "bob@node1")
        a = await ws_on(h, U[0], alice, "alice@node0")
        await b.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == alice.id
                         and m.get("status") == "online", what="alice (node 0) online at bob (node 1)")
        node = server.nodes[0]
        nid = int(re.findall(r'"msg":"listening".*?"node":(\d+)', node.log_text())[-1])
        n = len(b.msgs)
        node.kill()
        await b.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == alice.id
                         and m.get("status") == "offline", start=n, timeout=20,
                         what="alice offline after her node died")
        await asyncio.sleep(10.5)                     # the dead process's node id lease expires
        n = len(b.msgs)
        node.extra_args = server.node_args(0) + ["--node-id", str(nid)]   # the same id, as cluster.sh
        await asyncio.to_thread(node.start)
        await asyncio.to_thread(server._wait_node_ready, 0)
        await asyncio.sleep(3)                        # its beats are heard again
        await b.ping()
        back = [m for m in b.msgs[n:] if m.get("type") == "presence" and m.get("user") == alice.id]
        assert back == [], f"alice announced again after her node restarted: {back}"
        r = await b.request({"type": "presence_query", "users": [alice.id]})
        assert r["users"][0]["status"] == "offline", r
        for url in server.node_urls:                  # the restarted node too (audit O7: its own
            api = Api(url, h.api.session)             # dead process's views came back from Redis)
            r = await api.expect(200, "GET", f"/api/v1/presence?users={alice.id}", token=bob.token)
            assert r.body["users"][0]["status"] == "offline", (url, r.body)


@pytest.mark.cluster_only(WHY)
@async_test(90)
async def test_a_killed_nodes_typist_stops_typing_at_the_ttl(server_factory):
    """Audit G3: the typist's node is the clock of a typing entry (it sends
    the stop), so the other nodes keep theirs republish_ms past the TTL;
    when that node was killed the stop never came and the indicator lasted
    TTL + republish_ms (7.5 s at the default 5 s; 6 s here), after the
    typist had already been announced offline. Now a node that takes the
    typist's node for gone ends the entry at the TTL after the last start
    it heard."""
    ttl = 4.0
    server = server_factory(["--typing-ttl", str(int(ttl * 1000))])
    U = server.node_ws_urls
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "tk")
        cid = (await h.api.open_dm(alice, bob.id))["id"]
        b = await ws_on(h, U[1], bob, "bob@node1")
        a = await ws_on(h, U[0], alice, "alice@node0")
        await a.ping()
        await b.ping()
        n = len(b.msgs)
        await a.send_json({"type": "typing", "conversation": cid, "state": "start"})
        await b.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "start",
                         start=n, what="typing start from node 0")
        started = time.monotonic()
        await asyncio.sleep(0.3)
        server.nodes[0].kill()
        await b.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "stop",
                         start=n, timeout=15, what="typing stop after the typist's node died")
        took = time.monotonic() - started
        assert took < ttl + 1.0, f"the stop came {took:.2f} s after the start (ttl {ttl} s)"
        await asyncio.to_thread(server.start)         # node 0 again, for the teardown


@pytest.mark.cluster_only(WHY)
@async_test(60)
async def test_a_view_refresh_announces_nothing_to_new_co_members(server_factory):
    """Bob is online on node 1 before he shares a conversation with alice
    (node 0). Once they share one, his node's periodic re-publication of his
    unchanged view must not announce him "online" to alice, as embedded mode
    never does (protocol.md "Presence": none when the state ends where it
    started). It did, at the first refresh (audit K). A real change still is."""
    server = server_factory(["--presence-timeout", "4", "--presence-coalesce", "100"])
    U = server.node_ws_urls
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "pvr")
        b = await ws_on(h, U[1], bob, "bob@node1")
        a = await ws_on(h, U[0], alice, "alice@node0")
        stop = asyncio.Event()
        hb = asyncio.ensure_future(heartbeats([a, b], stop))
        try:
            await asyncio.sleep(0.5)
            cid = (await h.api.create_group(alice, [bob.id], title="later"))["id"]
            await a.wait_seq(cid, 1)
            await b.wait_seq(cid, 1)
            await asyncio.sleep(3.5)          # three refreshes of bob's view (every 1 s here)
            assert presence_of(a, bob.id) == [], presence_of(a, bob.id)
            n = len(a.msgs)
            await b.send_json({"type": "presence", "status": "away"})
            await a.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == bob.id
                             and m.get("status") == "away", start=n, what="bob away at alice")
        finally:
            stop.set()
            await hb


@pytest.mark.cluster_only(WHY)
@async_test(60)
async def test_offline_reaches_a_session_on_another_node_that_came_after(server_factory):
    """Alice (node 0) is online before bob connects to node 1; she leaves:
    bob is told she is offline, as in embedded mode (protocol.md
    "Presence"). Node 1 had no view of alice before her change to
    offline, took offline for no change and announced nothing, ever
    (audit I2)."""
    server = server_factory(["--presence-coalesce", "100"])
    U = server.node_ws_urls
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "pof")
        await h.api.open_dm(alice, bob.id)
        a = await ws_on(h, U[0], alice, "alice@node0")
        await asyncio.sleep(1.0)
        b = await ws_on(h, U[1], bob, "bob@node1")
        await asyncio.sleep(1.0)
        n = len(b.msgs)
        await a.close()
        await b.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == alice.id
                         and m.get("status") == "offline", start=n, timeout=10, what="alice offline at bob")


@pytest.mark.cluster_only(WHY)
@async_test(60)
async def test_typing_refreshed_on_one_node_stays_on_at_the_other_nodes(server_factory):
    """A typist who keeps refreshing `start` (every 0.4 s, ttl 1.5 s) is
    typing for everyone until it stops: no `stop` in between, on any node."""
    server = server_factory(["--typing-ttl", "1500"])
    U = server.node_ws_urls
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "tr")
        cid = (await h.api.open_dm(alice, bob.id))["id"]
        a = await ws_on(h, U[0], alice, "alice@node0")
        b0 = await ws_on(h, U[0], bob, "bob@node0")
        b1 = await ws_on(h, U[1], bob, "bob@node1")
        n0, n1 = len(b0.msgs), len(b1.msgs)
        for _ in range(10):                          # 4 s of typing, refreshed well within the ttl
            await a.send_json({"type": "typing", "conversation": cid, "state": "start"})
            await asyncio.sleep(0.4)
        await a.ping()
        await b0.ping()
        await b1.ping()
        same_node = [m["state"] for m in typing_of(b0, n0)]
        other_node = [m["state"] for m in typing_of(b1, n1)]
        assert same_node and "stop" not in same_node, f"bob on alice's node saw {same_node}"
        assert other_node and "stop" not in other_node, \
            f"bob on another node saw typing {other_node} while alice kept refreshing every 0.4 s " \
            f"(ttl 1.5 s); bob on alice's node saw {same_node}"
        # once the refreshes end, it expires everywhere
        for c, n in ((b0, n0), (b1, n1)):
            await c.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "stop",
                             start=n, timeout=10, what="typing expired")


@pytest.mark.cluster_only(WHY)
@async_test(60)
async def test_typing_ends_on_every_node_a_ttl_after_the_last_refresh(server_factory):
    """Audit X2: refreshes between two republished starts (every ttl/2 at
    most) never reached the other nodes, which ended the indicator a ttl
    after the last start they heard: up to ttl/2 before the typist's node
    did. Refreshing every 0.7 s (ttl 1.5 s: republished every 0.75 s) makes
    the last refresh an unpublished one."""
    server = server_factory(["--typing-ttl", "1500"])
    U = server.node_ws_urls
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "tt")
        cid = (await h.api.open_dm(alice, bob.id))["id"]
        a = await ws_on(h, U[0], alice, "alice@node0")
        b0 = await ws_on(h, U[0], bob, "bob@node0")
        b1 = await ws_on(h, U[1], bob, "bob@node1")
        n0, n1 = len(b0.msgs), len(b1.msgs)
        for _ in range(6):
            await a.send_json({"type": "typing", "conversation": cid, "state": "start"})
            last = time.monotonic()
            await asyncio.sleep(0.7)
        ended = {}

        async def stop_at(c, n, key):
            await c.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "stop",
                             start=n, timeout=10, what="typing expired")
            ended[key] = time.monotonic() - last

        await asyncio.gather(stop_at(b0, n0, "same node"), stop_at(b1, n1, "other node"))
        for key, after in ended.items():
            assert 1.2 <= after <= 3.0, f"bob on the {key} saw stop {after:.2f} s after the last refresh " \
                                        f"(ttl 1.5 s): {ended}"


RATE, BURST = 2, 5


@pytest.mark.cluster_only(WHY)
@async_test(60)
async def test_per_user_rate_limit_holds_across_nodes(server_factory):
    server = server_factory(["--rate-user-msgs", str(RATE), "--rate-user-burst", str(BURST)])
    U = server.node_ws_urls
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "rl")
        cid = (await h.api.open_dm(alice, bob.id))["id"]
        conns = [await ws_on(h, U[i], alice, f"alice@node{i}") for i in range(3)]
        PER = 12
        t0 = time.monotonic()
        reqs = []
        for k in range(PER):                     # interleaved over the three nodes
            for c in conns:
                req, _ = await c.send_nowait(cid, f"flood {k}")
                reqs.append((c, req))
        replies = [await c.wait_reply(r, 30) for c, r in reqs]
        elapsed = time.monotonic() - t0
        admitted = [r for r in replies if r.get("type") == "sent"]
        limited = [r for r in replies if r.get("type") == "error" and r.get("code") == "rate_limited"]
        assert len(admitted) + len(limited) == len(replies), \
            f"replies other than sent/rate_limited: {[r for r in replies if r not in admitted + limited][:3]}"
        per_node = [sum(1 for (c, _), r in zip(reqs, replies) if c is conn and r.get("type") == "sent")
                    for conn in conns]
        bound = BURST + RATE * elapsed + 2      # generous: the bucket refills while we send
        print(f"rate limit across nodes: {len(admitted)} of {len(replies)} admitted in {elapsed:.2f}s "
              f"(per node {per_node}), bound {bound:.1f}; one bucket per node would admit >= {3 * BURST}")
        assert len(admitted) >= BURST, f"a full bucket admits its burst: {len(admitted)} admitted"
        assert len(admitted) <= bound, \
            f"one user over 3 nodes got {len(admitted)} sends admitted in {elapsed:.2f}s " \
            f"(per node {per_node}): the per-user limit ({RATE}/s, burst {BURST}) is not shared"
        for e in limited:
            assert 0 < e["retry_after"] <= 5, e
            assert "user" in e.get("message", ""), e
        # the limit recovers: after retry_after, sends are admitted again
        await asyncio.sleep(max(e["retry_after"] for e in limited) + 0.6)
        r = await conns[2].request({"type": "send", "conversation": cid, "client_msg_id": cmid(),
                                    "body": "after the wait"})
        assert r.get("type") == "sent", r
        hist = await h.api.history_all(alice, cid)
        assert len(msg_events(hist)) == len(admitted) + 1, "a refused send was stored"


@pytest.mark.cluster_only(WHY)
@async_test(90)
async def test_a_send_on_another_node_right_after_account_deletion_is_not_stored(server):
    """Audit P2 finding 2: right after `DELETE /api/v1/me` answered 204 on
    node 0, the account's WebSocket on node 1 (which had not heard of the
    revocation yet) could still send into its direct conversation, and the
    message was stored and delivered from `deleted#id` (11 of 15 rounds).
    The store's send now refuses a deleted sender; the purge no longer has
    to clean up after it."""
    U = server.node_ws_urls
    async with Harness(server) as h:
        api0 = Api(server.node_urls[0], h.api.session)
        alice, = await h.api.register_many(1, "gd")
        for k in range(8):
            bob, = await h.api.register_many(1, "gd")
            dm = (await h.api.open_dm(alice, bob.id))["id"]
            b1 = await ws_on(h, U[1], bob, f"bob{k}@node1")
            mine = (await b1.send_msg(dm, "before"))["seq"]
            theirs = (await h.api.expect(201, "POST", f"/api/v1/conversations/{dm}/messages", token=alice.token,
                                         json_body={"client_msg_id": cmid(), "body": "to bob"})).body["seq"]
            r = await api0.req("DELETE", "/api/v1/me", token=bob.token, json_body={"password": bob.password})
            assert r.status == 204, r
            req, _ = await b1.send_nowait(dm, "after the deletion")
            await b1.send_json({"type": "react", "req": "r", "conversation": dm, "seq": theirs, "emoji": "👍"})
            await b1.closed.wait()
            reply = b1.reply(req)
            assert reply is None or reply.get("type") == "error", (k, reply)
            hist = await h.api.history_all(alice, dm)
            msgs = msg_events(hist)                   # "before" (erased by a purge, maybe), "to bob"
            assert [m["seq"] for m in msgs] == [mine, theirs], (k, hist)
            assert not [e for e in hist if e.get("kind") == "reaction"], (k, hist)   # nor a reaction


@pytest.mark.cluster_only(WHY)
@async_test(60)
async def test_sends_waiting_on_a_hung_redis_when_a_drain_begins_are_answered(server_factory):
    """Audit N6: a send waiting on the shared rate limit in a hung Redis
    (SIGSTOP) when its node's drain began got no answer before the close
    (the bus admits after 1 s, by then the connection was closed). Now the
    drain answers the waiting rate takes first: the WebSocket send gets
    `unavailable` "shutting down" and the REST send 503, neither stored."""
    server = server_factory(["--rate-user-msgs", "50", "--rate-user-burst", "100"])
    U = server.node_ws_urls
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "hd")
        cid = (await h.api.open_dm(alice, bob.id))["id"]
        a = await ws_on(h, U[0], alice, "alice@node0")
        await a.send_msg(cid, "before")
        node0 = Api(server.node_urls[0], h.api.session)
        redis = server.redis.proc.pid
        os.kill(redis, signal.SIGSTOP)
        try:
            req, _ = await a.send_nowait(cid, "waiting on redis (ws)")
            rest = asyncio.ensure_future(node0.req(
                "POST", f"/api/v1/conversations/{cid}/messages", token=alice.token,
                json_body={"client_msg_id": cmid(), "body": "waiting on redis (rest)"}))
            await asyncio.sleep(0.3)                  # both wait on the rate take (1 s at most)
            stopping = asyncio.ensure_future(asyncio.to_thread(server.nodes[0].stop))   # SIGTERM, waits
            reply = await a.wait_reply(req, 10)
            r = await rest
        finally:
            os.kill(redis, signal.SIGCONT)
        assert reply.get("type") == "error" and reply.get("code") == "unavailable" \
            and reply.get("message") == "shutting down", reply
        assert r.status == 503 and r.body["error"]["code"] == "unavailable", r
        await a.closed.wait()
        assert a.close_code == 1001, a.close_code
        other = Api(server.node_urls[1], h.api.session)
        hist = await other.history_all(alice, cid)
        assert [e["body"] for e in msg_events(hist)] == ["before"], hist
        await stopping                                # a clean exit (checked at the teardown)
    await asyncio.to_thread(server.start)             # node 0 again, for the teardown


@pytest.mark.cluster_only(WHY)
@async_test(60)
async def test_logout_on_node0_closes_the_login_on_node2_and_the_token_dies_everywhere(server):
    U = server.node_ws_urls
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "lo")
        cid = (await h.api.open_dm(alice, bob.id))["id"]
        other = await h.api.login(alice)                # a second login of alice
        w2 = await ws_on(h, U[2], alice, "alice-login1@node2")
        w1 = await ws_on(h, U[1], other["access_token"], "alice-login2@node1")
        wb = await ws_on(h, U[0], bob, "bob@node0")
        apis = [Api(u, h.session) for u in server.node_urls]
        for api in apis:
            await api.expect(200, "GET", "/api/v1/me", token=alice.token)

        r = await apis[0].req("POST", "/api/v1/auth/logout", token=alice.token)
        assert r.status == 204, r
        code = await w2.wait_closed(timeout=15)
        assert code == 4001, f"logout on node 0: the login's WebSocket on node 2 closed with {code}"
        for i, api in enumerate(apis):
            r = await api.req("GET", "/api/v1/me", token=alice.token)
            assert r.status == 401, f"node {i} still takes the logged-out token: {r!r}"
            await api.expect(200, "GET", "/api/v1/me", token=other["access_token"])
        r = await apis[1].refresh(alice.refresh_token)
        assert r.status == 401, f"node 1 refreshed a logged-out login: {r!r}"
        late = await ws_on(h, U[1], alice, "alice-login1-again@node1", expect_ready=False)
        assert await late.wait_closed(timeout=15) == 4001
        # the other login and other users are untouched
        await w1.ping()
        ack = await w1.send_msg(cid, "still here")
        await wb.wait_seq(cid, ack["seq"])


# --------------------------------------------------------------------------
# bad starts


def _env():
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    return env


def _run_node(binary, workdir, args, wait=20.0):
    """Starts a parleyd with args; returns (exit status or None if it is
    still running after `wait`, its output so far, the Popen, its port)."""
    port = free_port()
    os.makedirs(os.path.join(workdir, "data"), exist_ok=True)
    log = os.path.join(workdir, "out.log")
    cmd = [binary, "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(workdir, "data")] \
        + CHEAP_HASH + list(args)
    with open(log, "wb") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=_env(), cwd=workdir)
    try:
        rc = p.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        rc = None
    with open(log, "rb") as f:
        out = f.read().decode("utf-8", "replace")
    return rc, out, p, port


def _stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


@pytest.mark.cluster_only("cluster mode's --store postgres://")
def test_node_with_unreachable_database_refuses_and_says_why(mode, parleyd_bin, tmp_path):
    closed = free_port()
    url = f"postgres://parley@127.0.0.1:{closed}/x"
    rc, out, p, port = _run_node(parleyd_bin, str(tmp_path), ["--store", url], wait=20)
    try:
        if rc is None:
            # still running: then it must not be ready, and say why
            st, body = readyz(f"http://127.0.0.1:{port}")
            assert st == 503 and "store" in body, \
                f"a node without its database must not be ready: /readyz {st} {body!r}\n{out[-2000:]}"
        else:
            assert rc != 0, f"exited 0 without its database:\n{out[-2000:]}"
        assert "store" in out.lower() and (str(closed) in out or "connect" in out.lower()), \
            f"the output does not say the database is unreachable:\n{out[-2000:]}"
        hits = [m for m in SANITIZER_MARKERS if m in out]
        assert not hits, f"sanitizer report on the failed start:\n{out[-6000:]}"
    finally:
        _stop(p)


@pytest.mark.cluster_only("node ids are leased in the shared database")
def test_second_node_with_a_leased_node_id_is_refused(server, parleyd_bin, tmp_path):
    taken = node_id_of(server.nodes[0])
    rc, out, p, port = _run_node(parleyd_bin, str(tmp_path),
                                 ["--store", server.db.url, "--redis", server.redis.url,
                                  "--node-id", str(taken)], wait=20)
    try:
        assert rc is not None and rc != 0, \
            f"a second node with node id {taken} (leased by node 0) was not refused at start " \
            f"(status {rc}):\n{out[-2000:]}"
        assert f"node id {taken}" in out and "in use" in out, \
            f"the refusal does not say the node id is in use:\n{out[-2000:]}"
        hits = [m for m in SANITIZER_MARKERS if m in out]
        assert not hits, f"sanitizer report on the refused start:\n{out[-6000:]}"
    finally:
        _stop(p)
    st, body = readyz(server.node_urls[0])
    assert st == 200, f"node 0 after the refused duplicate: /readyz {st} {body!r}"
    assert node_id_of(server.nodes[0]) == taken


@pytest.mark.cluster_only("node ids are leased in the shared database")
def test_a_failed_start_gives_its_node_id_back(server, parleyd_bin, tmp_path):
    """A start that fails after the store opened (a --media-dir whose parent
    is missing) kept its node id leased for 10 s, so the corrected command
    with the same --node-id was refused as "in use by another live parleyd"
    (audit B). The store is now closed on the way out: the id is free."""
    ids = {node_id_of(n) for n in server.nodes}
    free = next(i for i in range(1, 1000) if i not in ids)
    args = ["--store", server.db.url, "--redis", server.redis.url, "--node-id", str(free)]
    rc, out, p, _ = _run_node(parleyd_bin, str(tmp_path / "bad"),
                              args + ["--media-dir", str(tmp_path / "missing" / "media")], wait=30)
    _stop(p)
    assert rc == 1 and "cannot create" in out, f"status {rc}:\n{out[-2000:]}"
    rc, out, p, port = _run_node(parleyd_bin, str(tmp_path / "good"),
                                 args + ["--media-dir", str(tmp_path / "media")], wait=3)
    try:
        assert rc is None, f"the corrected start was refused (status {rc}):\n{out[-2000:]}"
        st, body = readyz(f"http://127.0.0.1:{port}")
        assert st == 200, (st, body)
    finally:
        _stop(p)
    assert p.returncode == 0
    hits = [m for m in SANITIZER_MARKERS if m in out]
    assert not hits, out[-6000:]


@pytest.mark.cluster_only("scripts/cluster.sh starts a cluster of its own")
def test_cluster_script_as_the_readme_runs_it_serves_uploads_from_every_node(mode, parleyd_bin):
    """README "Cluster mode": `scripts/cluster.sh up N`, clients at the `lb`
    address. Any node serves any user: an upload made through one node is
    there on every node (the script gives the nodes one --media-dir)."""
    import shutil
    import socket
    import tempfile
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    scratch = tempfile.mkdtemp(prefix="parley-clsh-")   # the postgres user must reach it
    os.chmod(scratch, 0o755)
    env = dict(os.environ, CLUSTER_DIR=os.path.join(scratch, "cl"), PARLEYD=parleyd_bin)
    script = os.path.join(repo, "scripts", "cluster.sh")
    up = subprocess.run([script, "up", "2"], env=env, capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        for i in range(2):                     # the script's data directories are the nodes' own (audit G4)
            with open(os.path.join(scratch, "cl", f"node{i}.log")) as f:
                assert "open to other users" not in f.read()
        lb = [ln.split()[1] for ln in up.stdout.splitlines() if ln.startswith("lb ")]
        assert lb, up.stdout
        base = f"http://{lb[0]}"
        # the script and the test harness make the same server lines (both
        # backends) from deploy/haproxy.cfg
        from cluster_proc import HAProxy
        ports = [(ln.split()[1], int(ln.split()[2].rsplit(":", 1)[1]))
                 for ln in up.stdout.splitlines() if ln.startswith("node ")]
        mine = HAProxy(os.path.join(scratch, "h"), [(f"node{i}", "127.0.0.1", p) for i, p in ports])
        with open(os.path.join(scratch, "cl", "haproxy.cfg")) as f:
            theirs = f.read()

        def server_lines(text):
            return [ln for ln in text.splitlines() if ln.lstrip().startswith("server ")]
        assert server_lines(theirs) == server_lines(mine.render()) and len(server_lines(theirs)) == 4, \
            (server_lines(theirs), server_lines(mine.render()))

        def call(method, path, body=None, token=None, data=None, ctype="application/json"):
            h = {"Content-Type": ctype}
            if token:
                h["Authorization"] = f"Bearer {token}"
            if body is not None:
                data = json.dumps(body).encode()
            r = urllib.request.Request(base + path, method=method, headers=h, data=data)
            try:
                with urllib.request.urlopen(r, timeout=10) as resp:
                    return resp.status, resp.headers.get("X-Parley-Node"), resp.read()
            except urllib.error.HTTPError as e:
                return e.code, e.headers.get("X-Parley-Node"), e.read()

        st, _, b = call("POST", "/api/v1/auth/register", {"username": "lbmedia", "password": "a long password 1"})
        assert st == 201, b
        tok = json.loads(b)["access_token"]
        st, _, b = call("POST", "/api/v1/media?name=f.txt&type=text/plain", token=tok,
                        data=b"one blob store", ctype="text/plain")
        assert st == 201, b
        mid = json.loads(b)["id"]
        nodes = set()
        for _ in range(6):
            st, node, b = call("GET", f"/api/v1/media/{mid}", token=tok)
            assert st == 200 and b == b"one blob store", (st, node, b)
            nodes.add(node)
        assert len(nodes) == 2, nodes          # HAProxy spread the reads over both nodes

        # A node killed with SIGKILL comes back with `up 2`, on its port, while
        # the other keeps serving (audit K: `up` refused until `down`).
        pids = {ln.split()[1]: int(ln.split()[4]) for ln in up.stdout.splitlines() if ln.startswith("node ")}
        os.kill(pids["0"], signal.SIGKILL)
        again = subprocess.run([script, "up", "2"], env=env, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "restarting node 0" in again.stderr and "No such file" not in again.stderr, again.stderr
        now = {ln.split()[1]: (ln.split()[2], int(ln.split()[4]))
               for ln in again.stdout.splitlines() if ln.startswith("node ")}
        assert now["1"][1] == pids["1"] and now["0"][1] != pids["0"], (pids, now)
        with urllib.request.urlopen(f"http://{now['0'][0]}/readyz", timeout=10) as resp:
            assert resp.status == 200
        st, _, b = call("GET", f"/api/v1/media/{mid}", token=tok)
        assert st == 200 and b == b"one blob store", (st, b)

        # Right after its SIGTERM a node is still draining: alive, its port
        # closed. `up 2` then waits for it to exit and starts it again
        # (audit T 4; before: "already up" with the draining node listed,
        # which exited a moment later and left the cluster short).
        held = now["1"][1]
        host1, port1 = now["1"][0].rsplit(":", 1)
        ws = socket.create_connection((host1, int(port1)), timeout=10)   # never answers the close:
        ws.sendall(f"GET /ws HTTP/1.1\r\nHost: {now['1'][0]}\r\nUpgrade: websocket\r\n"  # a ~2 s drain
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        assert ws.recv(4096).startswith(b"HTTP/1.1 101"), "WebSocket to node 1"
        os.kill(held, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection((host1, int(port1)), timeout=1).close()
            except ConnectionRefusedError:
                break
            except ConnectionResetError:         # taken from the backlog as the listener closed
                pass
            assert time.monotonic() < deadline, "node 1 still accepts 5 s after SIGTERM"
            time.sleep(0.005)
        os.kill(held, signal.SIGSTOP)            # hold the drain, so the script cannot race its end
        try:
            upping = subprocess.Popen([script, "up", "2"], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            try:
                out, err = upping.communicate(timeout=5)       # the old script answered at once
            except subprocess.TimeoutExpired:                 # waiting for node 1: let it end
                os.kill(held, signal.SIGCONT)
                out, err = upping.communicate(timeout=120)
        finally:
            try:
                os.kill(held, signal.SIGCONT)
            except ProcessLookupError:
                pass
            ws.close()
        assert upping.returncode == 0, out + err
        assert f"node 1 (pid {held}) is draining" in err and "restarting node 1" in err, err
        after = {ln.split()[1]: (ln.split()[2], int(ln.split()[4]))
                 for ln in out.splitlines() if ln.startswith("node ")}
        assert after["1"][1] != held and after["0"] == now["0"], (now, after, err)
        with urllib.request.urlopen(f"http://{after['1'][0]}/readyz", timeout=10) as resp:
            assert resp.status == 200
    finally:
        down = subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr


def _raw(port, data, timeout=5):
    """Everything the server sends back on a fresh connection after data,
    until it closes or goes quiet for timeout seconds."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
        except socket.timeout:
            pass
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.cluster_only("HAProxy in front of the nodes")
def test_lb_answers_its_own_errors_as_json_and_logs_no_query_strings(server):
    """Through HAProxy: another HTTP version gets 505 as from a node, the
    HAProxy log holds request paths without their query strings (search
    text, media link signatures), and with no node left HAProxy's 503 is
    Parley's JSON error with its headers (deploy/errors); audit E2 F2, F7,
    F1. (A request HAProxy cannot parse still gets its HTML 400: HAProxy
    2.6 answers those before any errorfile applies; README says so.)"""
    c = server
    port = c.haproxy.port

    def json_error(st, headers, body, status, code):
        assert st == status, (st, headers, body)
        assert headers["content-type"] == "application/json", headers
        assert json.loads(body)["error"]["code"] == code, body
        for h, v in (("cache-control", "no-store"), ("referrer-policy", "no-referrer"),
                     ("x-content-type-options", "nosniff")):
            assert headers.get(h) == v, (h, headers)

    json_error(*_raw(port, b"GET /healthz HTTP/2.0\r\nHost: x\r\nConnection: close\r\n\r\n"), 505,
               "bad_request")
    st, _, _ = _raw(port, b"GARBAGE\r\n\r\n")
    assert st == 400
    try:
        urllib.request.urlopen(c.base_url + "/api/v1/search?q=zebrasecret&limit=3", timeout=5)
        raise AssertionError("search without a token answered")
    except urllib.error.HTTPError as e:
        assert e.code == 401, e.code
    deadline = time.monotonic() + 5
    while "/api/v1/search" not in c.haproxy.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = c.haproxy.log_text()
    assert '"GET /api/v1/search HTTP/1.1"' in log, log[-2000:]
    assert "zebrasecret" not in log

    for n in c.nodes:
        n.stop()
    reply = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        reply = _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        if reply[0] == 503:
            break
        time.sleep(0.2)
    json_error(*reply, 503, "unavailable")
    assert reply[1].get("retry-after") == "1", reply


@pytest.mark.cluster_only(WHY)
@async_test(120)
async def test_a_token_the_store_cannot_check_is_unavailable_not_unauthorized(server):
    """While PostgreSQL is down a node cannot check a login session: REST
    answers 503 unavailable (retry), never 401, which would tell a client
    to throw away tokens that are fine (before: 401)."""
    pg = server.pg
    async with Harness(server) as h:
        api = Api(server.node_urls[0], h.session)
        a = await api.register("tokdown")
        await api.expect(200, "GET", "/api/v1/me", token=a.token)
        await asyncio.to_thread(pg.stop)
        try:
            await wait_readyz(server.node_urls, 503, "store unavailable", timeout=20)
            for method, path in (("GET", "/api/v1/me"), ("GET", "/api/v1/conversations"),
                                 ("POST", "/api/v1/auth/logout")):
                r = await api.req(method, path, token=a.token)
                assert r.status == 503 and r.body["error"]["code"] == "unavailable", (method, path, r)
                # when to try again, as HAProxy's own 503 says (audit G3)
                assert {k.lower(): v for k, v in r.headers.items()}.get("retry-after") == "1", r.headers
            r = await api.req("GET", "/api/v1/me", token="v1.1.1.1.forged")
            assert r.status == 401, r                       # a bad token is still a bad token
        finally:
            await asyncio.to_thread(pg.start)
        await wait_readyz(server.node_urls, 200, "ready", timeout=40)
        r = await api.expect(200, "GET", "/api/v1/me", token=a.token)
        assert r.body["id"] == a.id


@pytest.mark.cluster_only(WHY)
@async_test(90)
async def test_a_removed_members_presence_stops_reaching_the_others_on_every_node(server):
    """protocol.md "Presence": changes go to the users who share a
    conversation with the user. Audit E5: after c was removed from the only
    group it shared with b, b on another node went on getting c's `away`
    and `offline` (c's node published its next view naming no
    conversation, and b's node kept the list it had)."""
    U = server.node_ws_urls
    async with Harness(server) as h:
        api = h.api
        a, b, c = await api.register_many(3, "rmp")
        g = (await api.create_group(a, [b.id, c.id], title="presence"))["id"]
        wb = await ws_on(h, U[0], b, "b@node0")
        wc = await ws_on(h, U[1], c, "c@node1")
        await wb.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == c.id
                          and m.get("status") == "online", timeout=10, what="c online")
        await api.expect(204, "DELETE", f"/api/v1/conversations/{g}/members/{c.id}", token=a.token)
        await wb.wait_seq(g, 2)                   # created, then member_removed
        assert wb.conv_events(g)[-1]["kind"] == "member_removed"
        # and c's own node has heard of it (protocol.md "Presence": until
        # then its changes go to the audience it knew; on a loaded machine
        # the bus reached node 1 after c had sent its `away`)
        await wc.wait_seq(g, 2)
        n0 = len(wb.msgs)
        await wc.send_json({"type": "presence", "status": "away"})
        await asyncio.sleep(2.0)                  # past the window and the bus
        await wc.close()
        await asyncio.sleep(2.0)
        await wb.ping()
        leaked = [m for m in wb.msgs[n0:] if isinstance(m, dict) and m.get("type") == "presence"
                  and m.get("user") == c.id]
        assert leaked == [], leaked
