"""The content filter (protocol.md "Content filter"; P12): --content-filter
names a file of rules; `block` refuses a send or an edit (`filtered`, 422)
and stores nothing, `mask` stores the text with the match starred, `flag`
stores it and files a report for the moderators. SIGHUP rereads the file,
and a bad file keeps the rules in force. Both modes."""

import asyncio
import os
import secrets
import signal
import subprocess
import tempfile
import time

from pclient import PASSWORD, Harness, User, async_test
from test_limits import metrics

RULES = """# the test's rules
block  buy followers
mask   darn
flag   /free +crypto/
"""


def rules_file(text):
    fd, path = tempfile.mkstemp(prefix="parley-filter-", suffix=".rules")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def procs(s):
    return [n.proc for n in s.nodes] if hasattr(s, "nodes") else [s.proc]


async def register_as(api, name):
    r = await api.expect(201, "POST", "/api/v1/auth/register", json_body={"username": name, "password": PASSWORD})
    b = r.body
    return User(b["user"]["id"], b["user"]["username"], PASSWORD, b["access_token"], b["refresh_token"], b)


async def last_seq(api, user, conv):
    return (await api.expect(200, "GET", f"/api/v1/conversations/{conv}", token=user.token)).body["last_seq"]


async def ws_send(w, conv, body, cmid=None):
    return await w.request({"type": "send", "conversation": conv, "client_msg_id": cmid or secrets.token_hex(8),
                            "body": body})


async def eventually(fetch, done, timeout=15):
    """fetch() again until done(answer) or timeout: the last answer. For
    what follows an ack (the filter's reports are filed just after it)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await fetch()
        if done(got) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


@async_test(120)
async def test_content_filter_blocks_masks_and_flags(server_factory):
    boss = "mod" + secrets.token_hex(4)
    path = rules_file(RULES)
    s = server_factory(["--content-filter", path, "--admins", boss])
    async with Harness(s) as h:
        api = h.api
        alice, bob = await api.register_many(2, "flt")
        mod = await register_as(api, boss)
        g = (await api.create_group(alice, [bob.id], title="g"))["id"]
        wa = await h.ws(alice, name="alice")
        wb = await h.ws(bob, name="bob")
        head = await last_seq(api, alice, g)

        # block: over the WebSocket and REST, any case and separator; nothing stored
        err = await ws_send(wa, g, "Buy FOLLOWERS today")
        assert err["type"] == "error" and err["code"] == "filtered", err
        assert err["message"] == "the message was refused by the server's content filter", err
        r = await api.req("POST", f"/api/v1/conversations/{g}/messages", token=alice.token,
                          json_body={"client_msg_id": "b-1", "body": "buy-followers"})
        assert r.status == 422 and r.body["error"]["code"] == "filtered", r
        assert await last_seq(api, alice, g) == head
        ok = await ws_send(wa, g, "buy some followers")             # not the term: words in a row
        assert ok["type"] == "sent", ok

        # mask: stored and delivered starred
        m1 = await wa.send_msg(g, "darn it, DARN")
        r = await api.req("POST", f"/api/v1/conversations/{g}/messages", token=bob.token,
                          json_body={"client_msg_id": "m-2", "body": "oh darn"})
        assert r.status == 201, r
        m2 = r.body
        await wb.wait_seq(g, m2["seq"])
        got = {e["seq"]: e for e in wb.conv_events(g)}
        assert got[m1["seq"]]["body"] == "**** it, ****", got[m1["seq"]]
        hist = {e["seq"]: e for e in (await api.history(alice, g)).body["events"]}
        assert hist[m2["seq"]]["body"] == "oh ****", hist[m2["seq"]]

        # edits are checked the same way
        r = await api.req("PATCH", f"/api/v1/conversations/{g}/messages/{m1['seq']}", token=alice.token,
                          json_body={"body": "buy followers"})
        assert r.status == 422 and r.body["error"]["code"] == "filtered", r
        err = await wa.request({"type": "edit", "conversation": g, "seq": m1["seq"], "body": "BUY followers"})
        assert err["type"] == "error" and err["code"] == "filtered", err
        ok = await wa.request({"type": "edit", "conversation": g, "seq": m1["seq"], "body": "darn again"})
        assert ok["type"] == "ok", ok
        hist = {e["seq"]: e for e in (await api.history(alice, g)).body["events"]}
        assert hist[m1["seq"]]["body"] == "**** again", hist[m1["seq"]]

        # flag: stored as written, and a report from the filter (no reporter)
        assert not (await api.expect(200, "GET", f"/api/v1/conversations/{g}/reports", token=alice.token)).body["reports"]
        f1 = await wb.send_msg(g, "get FREE  crypto now")

        async def reports_of(conv):
            return (await api.expect(200, "GET", f"/api/v1/conversations/{conv}/reports", token=alice.token)).body

        async def all_reports():
            return (await api.expect(200, "GET", "/api/v1/reports", token=mod.token)).body["reports"]
        lst = await eventually(lambda: reports_of(g), lambda x: x["reports"])
        assert len(lst["reports"]) == 1, lst
        rep = lst["reports"][0]
        assert rep["reporter"] is None and rep["reason"] == "content filter", rep
        assert rep["note"] == "rule at line 4 of the content filter", rep
        assert rep["seq"] == f1["seq"] and rep["sender"]["id"] == bob.id, rep
        assert rep["message"]["body"] == "get FREE  crypto now", rep
        hist = {e["seq"]: e for e in (await api.history(alice, g)).body["events"]}
        assert hist[f1["seq"]]["body"] == "get FREE  crypto now"
        # the server's admins see it too, and resolve it
        all_ = (await api.expect(200, "GET", "/api/v1/reports", token=mod.token)).body["reports"]
        assert [x["id"] for x in all_] == [rep["id"]], all_
        await api.expect(200, "POST", f"/api/v1/reports/{rep['id']}/resolve", token=mod.token)
        # edited after the review into something flagged again: the report is open again
        await api.expect(200, "PATCH", f"/api/v1/conversations/{g}/messages/{f1['seq']}", token=bob.token,
                         json_body={"body": "free crypto, edited"})
        lst = await eventually(lambda: reports_of(g), lambda x: x["reports"])
        assert [(x["id"], x["resolved"], x["message"]["body"]) for x in lst["reports"]] == \
            [(rep["id"], None, "free crypto, edited")], lst
        # edited again before anyone reviewed it: the open report shows the
        # text the message has now, not the one flagged first (audit G2)
        await api.expect(200, "PATCH", f"/api/v1/conversations/{g}/messages/{f1['seq']}", token=bob.token,
                         json_body={"body": "free  crypto, edited twice"})
        lst = await eventually(lambda: reports_of(g),
                               lambda x: x["reports"] and x["reports"][0]["message"]["body"] != "free crypto, edited")
        assert [(x["id"], x["resolved"], x["message"]["body"]) for x in lst["reports"]] == \
            [(rep["id"], None, "free  crypto, edited twice")], lst
        # a member's own report of the same message is its own
        await api.expect(201, "POST", f"/api/v1/conversations/{g}/messages/{f1['seq']}/report", token=alice.token,
                         json_body={"reason": "spam"})

        # a direct conversation has no admins: only the server's see its filter reports
        d = (await api.open_dm(alice, bob.id))["id"]
        f2 = await wa.send_msg(d, "free crypto for you")
        all_ = await eventually(all_reports, lambda x: any(r["conversation"] == d for r in x))
        mine = [x for x in all_ if x["conversation"] == d]
        assert len(mine) == 1 and mine[0]["seq"] == f2["seq"] and mine[0]["reporter"] is None, all_

        # counted by action, summed over the nodes
        m = metrics(s)
        assert m['parley_content_filter_total{action="block"}'] == 4, m
        assert m['parley_content_filter_total{action="mask"}'] == 3, m
        assert m['parley_content_filter_total{action="flag"}'] == 4, m
    os.unlink(path)


@async_test(120)
async def test_content_filter_reread_on_sighup(server_factory):
    path = rules_file("block alpha\n")
    s = server_factory(["--content-filter", path])
    async with Harness(s) as h:
        api = h.api
        alice, bob = await api.register_many(2, "flr")
        g = (await api.create_group(alice, [bob.id], title="g"))["id"]
        wa = await h.ws(alice, name="alice")
        assert (await ws_send(wa, g, "alpha"))["code"] == "filtered"
        first = await ws_send(wa, g, "beta", cmid="beta-1")
        assert first["type"] == "sent", first
        r = await api.req("POST", f"/api/v1/conversations/{g}/messages", token=alice.token,
                          json_body={"client_msg_id": "beta-2", "body": "beta"})
        assert r.status == 201, r

        with open(path, "w") as f:
            f.write("block beta\n")
        for p in procs(s):
            p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while True:                       # each node rereads it on its own signal
            results = [(await ws_send(wa, g, "beta"))["type"] for _ in range(4)]
            if all(t == "error" for t in results) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert all(t == "error" for t in results), results
        assert (await ws_send(wa, g, "alpha"))["type"] == "sent"
        # a retry of a send stored before the rule: its original ack, not `filtered`
        again = await ws_send(wa, g, "beta", cmid="beta-1")
        assert again["type"] == "sent" and again["duplicate"] is True and again["seq"] == first["seq"], again
        r = await api.req("POST", f"/api/v1/conversations/{g}/messages", token=alice.token,
                          json_body={"client_msg_id": "beta-2", "body": "beta"})
        assert r.status == 200 and r.body["duplicate"] is True, r
        # a stranger's blocked send: not_found first, as without the filter
        eve, = await api.register_many(1, "fle")
        we = await h.ws(eve, name="eve")
        e = await ws_send(we, g, "beta")
        assert e["type"] == "error" and e["code"] == "not_found", e
        r = await api.req("POST", f"/api/v1/conversations/{g}/messages", token=eve.token,
                          json_body={"client_msg_id": "e-1", "body": "beta"})
        assert r.status == 404, r

        # a bad file: the rules in force stay, and the log says why
        with open(path, "w") as f:
            f.write("block gamma\nban beta\n")
        for p in procs(s):
            p.send_signal(signal.SIGHUP)
        logs = [n.log_path for n in s.nodes] if hasattr(s, "nodes") else [s.log_path]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all("content filter reload failed" in open(lp, errors="replace").read() for lp in logs):
                break
            await asyncio.sleep(0.1)
        for lp in logs:
            assert "content filter reload failed" in open(lp, errors="replace").read(), lp
        assert (await ws_send(wa, g, "beta"))["code"] == "filtered"
        assert (await ws_send(wa, g, "gamma"))["type"] == "sent"
    os.unlink(path)


def test_a_bad_rules_file_stops_the_start(parleyd_bin, tmp_path):
    bad = tmp_path / "rules"
    bad.write_text("block ok\nmask /a(/\n")
    for args, want in ((["--content-filter", str(bad)], "line 2: bad regex"),
                       (["--content-filter", str(tmp_path / "missing")], "cannot open")):
        p = subprocess.run([parleyd_bin, "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")] + args,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, (p.returncode, p.stderr)
        assert want in p.stderr, p.stderr
