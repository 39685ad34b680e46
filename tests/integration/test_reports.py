"""Reports of messages (protocol.md "Reports"; P12): a member reports, a
group's admins and the server's admins (--admins) review and resolve; the
report keeps the message as it was; nothing of it enters the log."""

import asyncio
import secrets
import time

import pytest

from pclient import PASSWORD, Harness, User, async_test


async def register_as(api, name):
    r = await api.expect(201, "POST", "/api/v1/auth/register", json_body={"username": name, "password": PASSWORD})
    b = r.body
    return User(b["user"]["id"], b["user"]["username"], PASSWORD, b["access_token"], b["refresh_token"], b)


async def report(api, user, conv, seq, reason="spam", note=None, status=201):
    body = {"reason": reason}
    if note is not None:
        body["note"] = note
    r = await api.expect(status, "POST", f"/api/v1/conversations/{conv}/messages/{seq}/report", token=user.token,
                         json_body=body)
    return r.body


@async_test(90)
async def test_reports_reviewed_by_admins(server_factory):
    boss = "mod" + secrets.token_hex(4)
    s = server_factory(["--admins", f"someone-else, {boss.upper()}"])   # names are case-insensitive
    async with Harness(s) as h:
        api = h.api
        alice, bob, carol, eve, dave = await api.register_many(5, "rep")
        mod = await register_as(api, boss)
        g = (await api.create_group(alice, [bob.id, carol.id], title="g"))["id"]
        cb = await h.ws(bob, name="bob")
        spam = await cb.send_msg(g, "buy cheap pills")
        mine = await h.ws(carol, name="carol")
        own = await mine.send_msg(g, "my own words")
        head = (await api.expect(200, "GET", f"/api/v1/conversations/{g}", token=alice.token)).body["last_seq"]

        r1 = await report(api, carol, g, spam["seq"], note="again and again")
        assert r1["created"] is True and r1["conversation"] == g and r1["seq"] == spam["seq"], r1
        r2 = await report(api, carol, g, spam["seq"], reason="abuse", status=200)      # a repeat
        assert r2["id"] == r1["id"] and r2["created"] is False, r2
        await report(api, carol, g, own["seq"], status=400)                 # your own message
        await report(api, carol, g, 1, status=400)                          # the created event
        await report(api, carol, g, head + 50, status=404)
        await report(api, eve, g, spam["seq"], status=404)                  # not a member
        await report(api, carol, g, spam["seq"], reason="boring", status=400)
        await report(api, carol, g, spam["seq"], note="x" * 501, status=400)
        # Not an event: the log did not move.
        assert (await api.expect(200, "GET", f"/api/v1/conversations/{g}", token=alice.token)).body["last_seq"] == head

        # The author edits it afterwards: the report keeps what was reported.
        r = await api.req("PATCH", f"/api/v1/conversations/{g}/messages/{spam['seq']}", token=bob.token,
                          json_body={"body": "nothing to see"})
        assert r.status == 200, r
        await api.expect(403, "GET", f"/api/v1/conversations/{g}/reports", token=carol.token)   # not an admin
        await api.expect(404, "GET", f"/api/v1/conversations/{g}/reports", token=eve.token)
        lst = (await api.expect(200, "GET", f"/api/v1/conversations/{g}/reports", token=alice.token)).body
        assert lst["has_more"] is False and len(lst["reports"]) == 1, lst
        rep = lst["reports"][0]
        assert rep["id"] == r1["id"] and rep["reason"] == "spam" and rep["note"] == "again and again", rep
        assert rep["reporter"] == {"id": carol.id, "username": carol.username}, rep
        assert rep["sender"] == {"id": bob.id, "username": bob.username}, rep
        assert rep["message"]["body"] == "buy cheap pills" and rep["message"]["id"] == spam["id"], rep
        assert rep["kind"] == "group" and rep["resolved"] is None, rep

        # Resolving: the group's admin; members cannot (nor tell it exists).
        await api.expect(404, "POST", f"/api/v1/reports/{r1['id']}/resolve", token=carol.token)
        ok = (await api.expect(200, "POST", f"/api/v1/reports/{r1['id']}/resolve", token=alice.token)).body
        assert ok == {"id": r1["id"], "changed": True}, ok
        again = (await api.expect(200, "POST", f"/api/v1/reports/{r1['id']}/resolve", token=alice.token)).body
        assert again["changed"] is False, again
        # the log says it once: a repeat resolved nothing
        logged = [ln for ln in s.log_text().splitlines()
                  if '"msg":"report resolved"' in ln and f'"report":{r1["id"]},' in ln]
        assert len(logged) == 1, logged
        assert (await api.expect(200, "GET", f"/api/v1/conversations/{g}/reports",
                                 token=alice.token)).body["reports"] == []
        done = (await api.expect(200, "GET", f"/api/v1/conversations/{g}/reports?resolved=1",
                                 token=alice.token)).body["reports"]
        assert len(done) == 1 and done[0]["resolved"] and done[0]["resolved_by"] == alice.id, done

        # A direct conversation has no admins: only the server's admins see its reports.
        dm = (await api.open_dm(dave, eve.id))["id"]
        cd = await h.ws(dave, name="dave")
        rude = await cd.send_msg(dm, "you are awful")
        r3 = await report(api, eve, dm, rude["seq"], reason="harassment")
        await api.expect(404, "GET", f"/api/v1/conversations/{dm}/reports", token=eve.token)
        await api.expect(403, "GET", "/api/v1/reports", token=alice.token)
        await api.expect(404, "POST", f"/api/v1/reports/{r3['id']}/resolve", token=eve.token)
        # a server admin's mistyped id is not found, not "no reports" (audit O)
        r = await api.req("GET", f"/api/v1/conversations/{dm + 987654}/reports", token=mod.token)
        assert r.status == 404 and r.body["error"]["message"] == "no such conversation", r
        # The message is deleted after the report: the report still has it.
        r = await api.req("DELETE", f"/api/v1/conversations/{dm}/messages/{rude['seq']}", token=dave.token)
        assert r.status == 200, r
        await report(api, dave, dm, rude["seq"], status=410)                 # gone now
        everything = (await api.expect(200, "GET", "/api/v1/reports", token=mod.token)).body["reports"]
        assert [x["id"] for x in everything] == [r3["id"]], everything      # open ones, newest first
        assert everything[0]["message"]["body"] == "you are awful" and everything[0]["kind"] == "direct"
        both = (await api.expect(200, "GET", "/api/v1/reports?resolved=1&limit=1", token=mod.token)).body
        assert [x["id"] for x in both["reports"]] == [r3["id"]] and both["has_more"] is True, both
        rest = (await api.expect(200, "GET", f"/api/v1/reports?resolved=1&before={both['next_before']}",
                                 token=mod.token)).body
        assert [x["id"] for x in rest["reports"]] == [r1["id"]] and rest["has_more"] is False, rest
        await api.expect(200, "GET", f"/api/v1/conversations/{g}/reports", token=mod.token)  # any conversation
        ok = (await api.expect(200, "POST", f"/api/v1/reports/{r3['id']}/resolve", token=mod.token)).body
        assert ok["changed"] is True, ok

        # Bad input changes nothing.
        for path, method in ((f"/api/v1/reports?limit=0", "GET"), ("/api/v1/reports?resolved=2", "GET"),
                             ("/api/v1/reports/abc/resolve", "POST"), ("/api/v1/reports/1/nothing", "POST")):
            r = await api.req(method, path, token=mod.token)
            assert r.status in (400, 404), (path, r)
        await api.expect(405, "GET", f"/api/v1/reports/{r3['id']}/resolve", token=mod.token)
        await api.expect(401, "GET", "/api/v1/reports")
        r = await api.req("POST", f"/api/v1/conversations/{g}/messages/{spam['seq']}/report", token=carol.token,
                          data=b"nope")
        assert r.status == 400, r


def wait_log(s, text, count=1, timeout=10.0):
    deadline = time.monotonic() + timeout
    while s.log_text().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged {count} times\n{s.log_tail()}"
        time.sleep(0.05)


@pytest.mark.embedded_only("one process's log (a cluster's nodes each check)")
def test_admins_nobody_registered_are_warned_about_at_start(server_factory):
    """An --admins name nobody holds goes to its first registrant: the start
    says so for each such name (and for one that cannot be a username), and
    not for a name that is registered."""
    ghost = "ghost" + secrets.token_hex(4)
    s = server_factory(["--admins", f"{ghost.upper()}, no way!"])
    wait_log(s, "--admins names something that cannot be a username")
    wait_log(s, f'"name":"{ghost}"')
    lines = [line for line in s.log_text().splitlines() if "has not registered" in line]
    assert len(lines) == 1 and ghost in lines[0], lines

    async def claim():
        async with Harness(s) as h:
            await register_as(h.api, ghost)
    asyncio.run(claim())
    s.restart()
    wait_log(s, '"msg":"listening"', count=2)
    wait_log(s, "cannot be a username", count=2)    # the second start's checks ran
    time.sleep(0.5)                                 # ... the read's answer comes after
    assert s.log_text().count("has not registered") == 1, s.log_tail()

