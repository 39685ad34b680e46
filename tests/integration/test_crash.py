"""kill -9 under load loses no acknowledged message.

A client streams sends with many in flight; parleyd is SIGKILLed after a
random number of acks; after a restart every acknowledged message is in the
history with the same seq, id and ts, the log is contiguous from 1, every
event a recipient saw before the crash exists, and new sends continue at the
next seq. Five rounds, accumulating."""

import asyncio
import json
import os
import random
import shutil
import subprocess
import tempfile
import time

import pytest

from pclient import Harness, async_test, assert_contiguous, msg_events, pipeline_send, seqs

ROUNDS = 5
WINDOW = 50


@async_test(170)
async def test_kill9_loses_no_acknowledged_message(server):
    seed = int(time.time())
    rng = random.Random(seed)
    print(f"crash test seed {seed}")
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "crash")
        cid = (await api.create_group(alice, [bob.id], title="crash"))["id"]

        sent = {}        # client_msg_id -> body, everything ever sent
        acked = {}       # client_msg_id -> first ack
        delivered = {}   # seq -> event id, everything bob saw

        def record_ack(c, ack):
            assert ack.get("type") == "sent", f"error reply while streaming: {ack}"
            prev = acked.get(c)
            if prev is None:
                acked[c] = ack
            else:
                assert (prev["id"], prev["seq"], prev["ts"]) == (ack["id"], ack["seq"], ack["ts"]), \
                    f"two different acks for {c}: {prev} {ack}"

        n = 0
        for rnd in range(ROUNDS):
            a = await h.ws(alice, name=f"a{rnd}")
            b = await h.ws(bob, auth="first", name=f"b{rnd}",
                           cursors={cid: max(delivered) if delivered else 0})
            kill_after = rng.randint(30, 300)
            inflight = {}        # req -> client_msg_id
            got = 0
            while got < kill_after:
                while len(inflight) < WINDOW:
                    c = f"r{rnd}-{n}"
                    n += 1
                    sent[c] = f"crash body {c}"
                    req, _ = await a.send_nowait(cid, sent[c], c)
                    inflight[req] = c
                await a.wait_until(lambda: any(a.reply(r) is not None for r in inflight),
                                   timeout=20, what="an ack")
                for r in list(inflight):
                    rep = a.reply(r)
                    if rep is not None:
                        record_ack(inflight.pop(r), rep)
                        got += 1
            server.kill()
            # Acks already on the wire before the kill count too.
            await a.wait_closed(timeout=10)
            await b.wait_closed(timeout=10)
            for r in list(inflight):
                rep = a.reply(r)
                if rep is not None:
                    record_ack(inflight.pop(r), rep)
            for e in b.conv_events(cid):
                assert delivered.setdefault(e["seq"], e["id"]) == e["id"], \
                    f"bob saw two ids for seq {e['seq']}"
            unacked = list(inflight.values())
            print(f"round {rnd}: killed after {len(acked)} acks in total, {len(unacked)} unacknowledged")
            await h.close_clients()

            await server.arestart()
            hist = await api.history_all(alice, cid)
            last = hist[-1]["seq"]
            assert_contiguous(seqs(hist), 1, f"round {rnd}: history seqs")
            by_cm = {}
            for e in msg_events(hist):
                c = e["client_msg_id"]
                assert c not in by_cm, f"round {rnd}: {c} stored twice"
                assert sent.get(c) == e["body"], f"round {rnd}: unknown or altered message {e}"
                by_cm[c] = e
            ids = [e["id"] for e in hist]
            assert len(set(ids)) == len(ids), f"round {rnd}: duplicate message ids after restart"
            for c, ack in acked.items():
                e = by_cm.get(c)
                assert e is not None, f"round {rnd}: acknowledged message lost: {ack}"
                assert (e["seq"], e["id"], e["ts"]) == (ack["seq"], ack["id"], ack["ts"]), \
                    f"round {rnd}: stored {e} differs from ack {ack}"
            hs = {e["seq"]: e["id"] for e in hist}
            for s, i in delivered.items():
                assert hs.get(s) == i, \
                    f"round {rnd}: bob was delivered seq {s} id {i}, history has {hs.get(s)}"

            # New sends continue at the next seq; unacknowledged sends retried
            # find their stored copy or are stored now, exactly once.
            a = await h.ws(alice, name=f"a{rnd}-after")
            nxt = f"next-{rnd}"
            sent[nxt] = f"crash body {nxt}"
            ack = await a.send_msg(cid, sent[nxt], nxt)
            assert ack["seq"] == last + 1 and ack["duplicate"] is False, \
                f"round {rnd}: after restart at last seq {last}, a new send got {ack}"
            record_ack(nxt, ack)
            retry = await pipeline_send(a, cid, [sent[c] for c in unacked], window=WINDOW,
                                        cmids=unacked)
            for c, r in zip(unacked, retry):
                if c in by_cm:
                    assert r["duplicate"] is True and (r["seq"], r["id"]) == \
                        (by_cm[c]["seq"], by_cm[c]["id"]), f"retry of stored {c}: {r} vs {by_cm[c]}"
                else:
                    assert r["duplicate"] is False and r["seq"] > last, r
                record_ack(c, r)
            await h.close_clients()

        # Everything ever sent is now stored exactly once, acks intact.
        hist = await api.history_all(bob, cid)
        assert_contiguous(seqs(hist), 1, "final history seqs")
        stored = {e["client_msg_id"]: e for e in msg_events(hist)}
        assert len(stored) == len(msg_events(hist))
        assert set(stored) == set(sent), \
            f"missing: {sorted(set(sent) - set(stored))[:10]} extra: {sorted(set(stored) - set(sent))[:10]}"
        for c, ack in acked.items():
            assert (stored[c]["seq"], stored[c]["id"]) == (ack["seq"], ack["id"]), (c, ack)
        # Sends of one connection keep their order within a round.
        for rnd in range(ROUNDS):
            mine = [e for e in msg_events(hist) if e["client_msg_id"].startswith(f"r{rnd}-")]
            nums = [int(e["client_msg_id"].split("-")[1]) for e in mine]
            assert nums == sorted(nums), f"round {rnd}: one connection's sends were reordered"


@pytest.mark.embedded_only("parleyd's own SQLite files")
@async_test(60)
async def test_a_removed_data_directory_stops_acknowledging(server):
    """Audit E4 F1: after `rm -rf` of the data directory, sends were still
    acknowledged (into files no restart finds) and /readyz stayed ready.
    Now the first commit after it fails: writes `unavailable`, /readyz 503,
    an error log line; nothing is acknowledged that a restart would lose."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "rmd")
        cid = (await api.open_dm(alice, bob.id))["id"]
        a = await h.ws(alice)
        await a.send_msg(cid, "before")
        shutil.rmtree(server.data_dir)
        r = await a.request({"type": "send", "conversation": cid, "client_msg_id": "after-rm", "body": "after"})
        assert r["type"] == "error" and r["code"] == "unavailable", r
        await api.expect(503, "POST", f"/api/v1/conversations/{cid}/messages", token=bob.token,
                         json_body={"client_msg_id": "after-rm-2", "body": "after"})
        await api.expect(503, "POST", "/api/v1/auth/register",
                         json_body={"username": "rmd_late", "password": "correct horse battery"})
        r = await api.expect(503, "GET", "/readyz")
        assert "store unavailable" in r.text, r
        assert "parley.db was removed or replaced while open: writes stopped" in server.log_text()
        for line in server.log_text().splitlines():    # each a JSON object (audit O8: its quotes)
            if line.startswith("{"):
                json.loads(line)


@pytest.fixture
def small_disk():
    """An 8 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    d = tempfile.mkdtemp(prefix="parley-small-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", d], capture_output=True)
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    yield d
    subprocess.run(["umount", "-l", d])
    os.rmdir(d)


@pytest.mark.embedded_only("parleyd's own SQLite files on a small disk")
@async_test(90)
async def test_a_full_disk_loses_no_acknowledged_message(server_factory, small_disk):
    """protocol.md `unavailable`: a commit that fails on a full disk stops
    the writes (`unavailable` with retry_after, /readyz 503) and nothing
    acknowledged is lost: after space is freed and parleyd restarted every
    acknowledged send is there, seqs contiguous, and a retry of one answers
    `duplicate`. The search indexer says it failed once, not a dozen times
    a second (audit E4 F7)."""
    data = os.path.join(small_disk, "data")
    server = server_factory(["--data-dir", data])
    filler = os.path.join(small_disk, "filler")
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "full")
        cid = (await api.open_dm(alice, bob.id))["id"]
        a = await h.ws(alice)
        st = os.statvfs(small_disk)
        with open(filler, "wb") as f:               # leave ~1 MiB
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - (1 << 20)))
        acked, err = {}, None
        for i in range(2000):
            r = await a.request({"type": "send", "conversation": cid, "client_msg_id": f"f{i}",
                                 "body": f"{i} " + "x" * 3900})
            if r["type"] == "sent":
                acked[f"f{i}"] = r["seq"]
                continue
            err = r
            break
        assert err and err["type"] == "error" and err["code"] == "unavailable" and err["retry_after"] > 0, err
        assert acked, "the disk filled before any send"
        r = await api.expect(503, "GET", "/readyz")
        assert "store unavailable" in r.text, r
        await asyncio.sleep(3)
        fails = server.log_text().count("search indexing pass failed")
        assert fails <= 2, f"{fails} indexing failure lines in 3 s"
    os.unlink(filler)
    server.stop()
    server.start()
    async with Harness(server) as h:
        api = h.api
        events, after = [], 0
        while True:
            r = await api.expect(200, "GET", f"/api/v1/conversations/{cid}/messages?limit=200&after={after}",
                                 token=bob.token)
            events += r.body["events"]
            if not r.body["has_more"]:
                break
            after = events[-1]["seq"]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        got = {e["client_msg_id"]: e["seq"] for e in events if e.get("client_msg_id")}
        for c, seq in acked.items():
            assert got.get(c) == seq, (c, seq, got.get(c))
        assert len(got) == len(acked), "a send answered `unavailable` was stored"
        a = await h.ws(alice)
        c = max(acked, key=acked.get)
        r = await a.request({"type": "send", "conversation": cid, "client_msg_id": c, "body": "again"})
        assert r["type"] == "sent" and r["seq"] == acked[c] and r.get("duplicate") is True, r
        r = await a.send_msg(cid, "after the restart")
        assert r["seq"] == max(acked.values()) + 1, r


def restore(server, backup, remove):
    """Stops the server, removes those files of its data directory, puts the
    backup in as parley.db and starts it again."""
    server.stop()
    for f in remove:
        try:
            os.unlink(os.path.join(server.data_dir, f))
        except FileNotFoundError:
            pass
    shutil.copy(backup, os.path.join(server.data_dir, "parley.db"))
    server.start()


@pytest.mark.embedded_only("parleyd's own SQLite files, restored from a backup")
@async_test(60)
async def test_a_restored_database_refuses_tokens_of_logins_it_does_not_have(server):
    """Audit N4: README's restore (parley.db from a backup, the same
    token.key) numbers users and logins again from the backup's, so an
    access token issued after the backup named a login id the next login
    took, and answered as that user (another user's DMs). A token carries
    its login's stamp (its creation) and is refused when the login with its
    id is not the one it was issued for."""
    import sqlite3
    backup = os.path.join(server.workdir, "backup.db")
    async with Harness(server) as h:
        api = h.api
        alice = await api.register("rst")
        src = sqlite3.connect(os.path.join(server.data_dir, "parley.db"))
        src.execute("VACUUM INTO ?", (backup,))       # README "Backups", as its sqlite3 line
        src.close()
        eve = await api.register("rst")               # after the backup: not in it
        await api.expect(200, "GET", "/api/v1/me", token=eve.token)
    restore(server, backup, ("parley.db", "parley.db-wal", "parley.db-shm",
                             "search.db", "search.db-wal", "search.db-shm"))
    await asyncio.sleep(1.1)                          # another second than eve's login
    async with Harness(server) as h:
        api = h.api
        frank = await api.register("rst")
        assert frank.id == eve.id, (frank.id, eve.id)  # the ids are given again
        r = await api.req("GET", "/api/v1/me", token=eve.token)
        assert r.status == 401, r
        await api.expect(200, "GET", "/api/v1/me", token=frank.token)
        await api.expect(200, "GET", "/api/v1/me", token=alice.token)   # issued before the backup
        ws = await h.ws(eve, expect_ready=False, name="eve-old")
        await ws.closed.wait()
        assert ws.close_code == 4001, ws.close_code


@pytest.mark.embedded_only("parleyd's own SQLite files, restored from a backup")
@async_test(60)
async def test_a_database_restored_beside_a_newer_search_index_rebuilds_it(server):
    """Audit N7: an older parley.db restored into its data directory beside
    the search.db that went on after the backup: the index's watermark was
    past the restored queue, so the next messages took queue ids it counted
    as done and were never searchable. Now the index is rebuilt, and says
    so."""
    import sqlite3
    from test_search import found_within, say, word
    backup = os.path.join(server.workdir, "backup-ix.db")
    async with Harness(server) as h:
        api = h.api
        alice, = await api.register_many(1, "rix")
        g = (await api.create_group(alice, [], title="rix"))["id"]
        old = word()
        await say(api, alice, g, f"{old} before the backup")
        await found_within(api, alice, old, 1, timeout=3.0)
        src = sqlite3.connect(os.path.join(server.data_dir, "parley.db"))
        src.execute("VACUUM INTO ?", (backup,))
        src.close()
        later = word()
        for i in range(5):                            # the index goes on past the backup
            await say(api, alice, g, f"{later} {i}")
        await found_within(api, alice, later, 5, timeout=3.0)
    restore(server, backup, ("parley.db", "parley.db-wal", "parley.db-shm"))   # search.db* stay
    async with Harness(server) as h:
        api = h.api
        new = word()
        for i in range(3):
            await say(api, alice, g, f"{new} {i}")
        await found_within(api, alice, new, 3, timeout=5.0)
        await found_within(api, alice, old, 1, timeout=5.0)
        await found_within(api, alice, later, 0, timeout=1.0)   # not in the restored database
    assert "the search index is ahead of the database" in server.log_text()


@pytest.mark.embedded_only("the data directory's token.key")
@async_test(60)
async def test_a_new_token_key_beside_a_database_is_logged_and_refreshed_past(server):
    """Audit N4: a token.key made anew beside an existing parley.db (lost,
    or left out of a restore) made every client's access token 401 with
    nothing in the log. Now a warning says so; refresh tokens, which live
    in parley.db, still work."""
    async with Harness(server) as h:
        alice = await h.api.register("nk")
    server.stop()
    os.unlink(os.path.join(server.data_dir, "token.key"))
    server.start()
    assert "token.key was missing beside parley.db: a new key was made" in server.log_text()
    async with Harness(server) as h:
        await h.api.expect(401, "GET", "/api/v1/me", token=alice.token)
        r = await h.api.expect(200, "POST", "/api/v1/auth/refresh",
                               json_body={"refresh_token": alice.refresh_token})
        await h.api.expect(200, "GET", "/api/v1/me", token=r.body["access_token"])
