"""Groups: multi-device fan-out with one order for all; member management."""

import asyncio

from pclient import (Harness, async_test, assert_contiguous, marker_barrier, msg_events, seq_ids,
                     seqs)


@async_test(90)
async def test_group_every_device_same_order(server):
    async with Harness(server) as h:
        api = h.api
        users = await api.register_many(5, "grp")
        u0, u1 = users[0], users[1]
        conv = await api.create_group(u0, [u.id for u in users[1:]], title="Ops")
        cid = conv["id"]
        assert conv["kind"] == "group" and conv["title"] == "Ops", conv
        assert conv["role"] == "admin", conv
        roles = {m["id"]: m["role"] for m in conv["members"]}
        assert roles == {u0.id: "admin", **{u.id: "member" for u in users[1:]}}, conv

        # The created event is seq 1 of the log.
        hist = await api.history_all(u0, cid)
        assert hist and hist[0]["seq"] == 1 and hist[0]["kind"] == "created", hist
        assert hist[0]["sender"] == u0.id, hist[0]
        assert hist[0]["data"]["kind"] == "group" and hist[0]["data"]["title"] == "Ops", hist[0]
        listed = set(hist[0]["data"]["members"])
        assert {u.id for u in users[1:]} <= listed <= {u.id for u in users}, hist[0]
        base = hist[-1]["seq"]

        # u1: three devices on the same token, plus a second login (a new session).
        second = await api.login(u1)
        conns = [await h.ws(u0, name="u0")]
        conns += [await h.ws(u1, name=f"u1-dev{i}") for i in range(3)]
        conns.append(await h.ws(second["access_token"], name="u1-login2"))
        conns += [await h.ws(u, name=f"u{i}") for i, u in enumerate(users[2:], start=2)]
        assert len(conns) == 8
        s1 = {c.ready["session"] for c in conns[1:4]}
        assert len(s1) == 1, f"devices sharing a token share a session: {s1}"
        assert conns[4].ready["session"] not in s1, "a second login is a new session"
        assert conns[4].ready["user"]["id"] == u1.id
        for c in conns:
            listed = {x["id"]: x["last_seq"] for x in c.ready["conversations"]}
            assert listed.get(cid) == base, f"{c.name} ready: {c.ready}"

        # Rounds in which all eight connections send at once.
        acks = []
        for rnd in range(4):
            acks += await asyncio.gather(*[c.send_msg(cid, f"{c.name} round {rnd}") for c in conns])
        ack_seqs = sorted(a["seq"] for a in acks)
        assert ack_seqs == list(range(base + 1, base + 1 + len(acks))), ack_seqs
        last = ack_seqs[-1]

        for c in conns:
            await c.wait_seq(cid, last)
        ref = seq_ids(conns[0].conv_events(cid))
        assert_contiguous([s for s, _ in ref], base + 1, "u0 event seqs")
        assert sorted(ref) == sorted((a["seq"], a["id"]) for a in acks), "events differ from acks"
        for c in conns[1:]:
            got = seq_ids(c.conv_events(cid))
            assert got == ref, f"{c.name} saw a different sequence than u0:\n{got}\n{ref}"

        # Every device of the sender got its own message too, and the bodies match.
        by_seq = {e["seq"]: e for e in conns[0].conv_events(cid)}
        for a in acks:
            e = by_seq[a["seq"]]
            assert e["kind"] == "message" and e["client_msg_id"] == a["client_msg_id"], (e, a)
            assert e["ts"] == a["ts"] and e["id"] == a["id"], (e, a)

        hist = await api.history_all(users[3], cid)
        assert seq_ids(hist)[-len(ref):] == ref
        assert_contiguous(seqs(hist), 1, "history seqs")


@async_test(90)
async def test_group_member_management(server):
    async with Harness(server) as h:
        api = h.api
        admin, m1, m2, newbie = await api.register_many(4, "mm")
        cid = (await api.create_group(admin, [m1.id, m2.id], title="team"))["id"]
        # a second group m2 stays in: the absence barrier's markers after its removal
        mk = (await api.create_group(admin, [m1.id, m2.id, newbie.id], title="markers"))["id"]
        ca = await h.ws(admin, name="admin")
        c1 = await h.ws(m1, name="m1")
        c2 = await h.ws(m2, name="m2")
        cn = await h.ws(newbie, name="newbie")   # connected before being added
        assert cid not in [x["id"] for x in cn.ready["conversations"]]

        pre = await ca.send_msg(cid, "before newbie")

        # A member who is not an admin may not add.
        r = await api.add_member(m1, cid, newbie.id)
        assert r.status == 403 and r.code == "forbidden", r
        r = await api.req("GET", f"/api/v1/conversations/{cid}", token=newbie.token)
        assert r.status == 404, f"a refused add must change nothing: {r!r}"
        # Nor remove.
        r = await api.remove_member(m1, cid, m2.id)
        assert r.status == 403 and r.code == "forbidden", r

        # The admin adds: a member_added event to everyone, the new member included.
        r = await api.add_member(admin, cid, newbie.id)
        assert r.status == 200, r
        assert newbie.id in [m["id"] for m in r.body["members"]], r
        added_seq = pre["seq"] + 1
        for c in (ca, c1, c2, cn):
            await c.wait_seq(cid, added_seq)
            e = [e for e in c.conv_events(cid) if e["seq"] == added_seq]
            assert len(e) == 1, (c.name, c.conv_events(cid))
            e = e[0]
            assert e["kind"] == "member_added" and e["data"]["user"] == newbie.id, e
            assert e["sender"] == admin.id, e
        assert seqs(cn.conv_events(cid)) == [added_seq], \
            f"the new member receives events from member_added on: {cn.conv_events(cid)}"

        # Adding a current member again is a no-op (200, no event).
        r = await api.add_member(admin, cid, newbie.id)
        assert r.status == 200, r

        a1 = await c1.send_msg(cid, "welcome")
        assert a1["seq"] == added_seq + 1, f"a no-op add must not take a seq: {a1}"
        an = await cn.send_msg(cid, "thanks")
        for c in (ca, c1, c2, cn):
            await c.wait_seq(cid, an["seq"])
        assert [e["body"] for e in msg_events(cn.conv_events(cid))] == ["welcome", "thanks"]
        r = await api.history(newbie, cid)
        assert r.status == 200, f"a member reads history: {r!r}"

        # The admin removes m2: m2 gets member_removed, then nothing more.
        r = await api.remove_member(admin, cid, m2.id)
        assert r.status == 204, r
        removed_seq = an["seq"] + 1
        for c in (ca, c1, c2, cn):
            await c.wait_seq(cid, removed_seq)
        e = c2.conv_events(cid)[-1]
        assert e["seq"] == removed_seq and e["kind"] == "member_removed", e
        assert e["data"]["user"] == m2.id and e["sender"] == admin.id, e

        later = []
        for c in (ca, c1, cn):
            later.append(await c.send_msg(cid, f"after removal from {c.name}"))
        last = later[-1]["seq"]
        for c in (ca, c1, cn):
            await c.wait_seq(cid, last)
        await c2.ping()     # let anything still in flight to m2 arrive
        await ca.ping()
        # ...from other nodes too (absence barrier, pclient.py): each of ca,
        # c1, cn sends a marker to mk after its "after removal" message was
        # acked, so its node publishes the marker after that message, and
        # m2's node, receiving each node's publishes in order, would have
        # put any of them on c2 before the marker.
        await marker_barrier(mk, [ca, c1, cn], [c2])
        assert c2.conv_events(cid)[-1]["seq"] == removed_seq, \
            f"a removed member still receives events: {c2.conv_events(cid)[-4:]}"

        # ...and can neither read nor write the conversation any more.
        r = await api.history(m2, cid)
        assert r.status == 404 and r.code == "not_found", r
        rep = await c2.request({"type": "send", "conversation": cid,
                                "client_msg_id": "after-removal", "body": "x"})
        assert rep["type"] == "error" and rep["code"] == "not_found", rep

        # The remaining members agree on one order.
        ref = seq_ids(ca.conv_events(cid))
        assert_contiguous([s for s, _ in ref], pre["seq"], "admin event seqs")
        assert seq_ids(c1.conv_events(cid)) == ref
        assert seq_ids(cn.conv_events(cid)) == [x for x in ref if x[0] >= added_seq]
        assert seq_ids(c2.conv_events(cid)) == [x for x in ref if x[0] <= removed_seq]
        hist = await api.history_all(admin, cid)
        assert_contiguous(seqs(hist), 1, "history seqs")
        assert [e["kind"] for e in hist if e["seq"] in (added_seq, removed_seq)] == \
            ["member_added", "member_removed"], hist


@async_test(90)
async def test_admins_make_members_admins_and_back(server):
    """PATCH .../members/{user} {"role": ...}: there was no way to make
    someone else an admin (audit G). Admins only; a member_role event to
    everyone when it changes, nothing when it does not; the last admin stays
    one."""
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol, dave = await api.register_many(4, "role")
        cid = (await api.create_group(alice, [bob.id, carol.id], title="roles"))["id"]
        wb = await h.ws(bob, name="bob")
        path = f"/api/v1/conversations/{cid}/members"

        r = await api.req("PATCH", f"{path}/{carol.id}", token=bob.token, json_body={"role": "admin"})
        assert r.status == 403 and r.code == "forbidden", r
        for bad in ({}, {"role": "owner"}, {"role": 2}):
            r = await api.req("PATCH", f"{path}/{bob.id}", token=alice.token, json_body=bad)
            assert r.status == 400 and r.code == "bad_request", (bad, r)
        r = await api.req("PATCH", f"{path}/{dave.id}", token=alice.token, json_body={"role": "admin"})
        assert r.status == 404, r
        r = await api.req("PATCH", f"{path}/{bob.id}", token=dave.token, json_body={"role": "admin"})
        assert r.status == 404, r

        r = await api.expect(200, "PATCH", f"{path}/{bob.id}", token=alice.token, json_body={"role": "admin"})
        assert {m["id"]: m["role"] for m in r.body["members"]}[bob.id] == "admin", r.body
        ev = await wb.wait_for(lambda m: m.get("type") == "event" and m.get("kind") == "member_role",
                               what="member_role event")
        assert ev["sender"] == alice.id and ev["data"] == {"user": bob.id, "role": "admin"}, ev
        head = r.body["last_seq"]
        r = await api.expect(200, "PATCH", f"{path}/{bob.id}", token=alice.token, json_body={"role": "admin"})
        assert r.body["last_seq"] == head, "the same role again appends nothing"

        # bob acts as an admin, and makes alice a member again
        await api.expect(200, "POST", path, token=bob.token, json_body={"user": dave.id})
        r = await api.expect(200, "PATCH", f"{path}/{alice.id}", token=bob.token, json_body={"role": "member"})
        assert {m["id"]: m["role"] for m in r.body["members"]}[alice.id] == "member", r.body
        r = await api.req("PATCH", f"{path}/{carol.id}", token=alice.token, json_body={"role": "admin"})
        assert r.status == 403, r
        # the last admin cannot step down
        r = await api.req("PATCH", f"{path}/{bob.id}", token=bob.token, json_body={"role": "member"})
        assert r.status == 400 and "last admin" in r.body["error"]["message"], r
        hist = await api.history_all(carol, cid)
        roles = [(e["sender"], e["data"]) for e in hist if e["kind"] == "member_role"]
        assert roles == [(alice.id, {"user": bob.id, "role": "admin"}),
                         (bob.id, {"user": alice.id, "role": "member"})], roles

        # a direct conversation has no roles to change
        d = (await api.open_dm(alice, bob.id))["id"]
        r = await api.req("PATCH", f"/api/v1/conversations/{d}/members/{bob.id}", token=alice.token,
                          json_body={"role": "admin"})
        assert r.status == 400, r


@async_test(60)
async def test_the_last_admin_leaving_names_the_new_admin_in_its_event(server):
    """Audit B2: when the last admin left (or removed itself) the
    longest-standing member became admin with no event saying so, so a
    client keeping roles from the log saw a group without an admin. The
    departure's event now carries data.new_admin."""
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "lad")
        cid = (await api.create_group(alice, [bob.id, carol.id], title="lad"))["id"]
        wc = await h.ws(carol, name="carol")
        await api.expect(204, "POST", f"/api/v1/conversations/{cid}/leave", token=alice.token)
        ev = await wc.wait_for(lambda m: m.get("type") == "event" and m.get("kind") == "member_left",
                               what="member_left")
        assert ev["data"] == {"user": alice.id, "new_admin": bob.id}, ev
        # bob, admin now, removes himself: carol is promoted
        await api.expect(204, "DELETE", f"/api/v1/conversations/{cid}/members/{bob.id}", token=bob.token)
        ev = await wc.wait_for(lambda m: m.get("type") == "event" and m.get("kind") == "member_removed",
                               what="member_removed")
        assert ev["sender"] == bob.id and ev["data"] == {"user": bob.id, "new_admin": carol.id}, ev
        r = await api.expect(200, "GET", f"/api/v1/conversations/{cid}", token=carol.token)
        assert {m["id"]: m["role"] for m in r.body["members"]} == {carol.id: "admin"}, r.body
        hist = await api.history_all(carol, cid)
        assert [e.get("data") for e in hist if e["kind"] in ("member_left", "member_removed")] == \
            [{"user": alice.id, "new_admin": bob.id}, {"user": bob.id, "new_admin": carol.id}], hist


@async_test(60)
async def test_group_title_follows_the_workspace_name_rules(server):
    """A title is held to a workspace name's rules, up to 128 bytes, and a
    refusal names the rule broken (protocol.md "POST /api/v1/conversations")."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "gtt")
        invisible = ("\"title\" must not contain invisible formatting characters "
                     "(zero-width characters, direction marks and overrides; emoji selectors and joiners are fine)")
        cases = {
            "\u0000": "\"title\" must not contain control characters",
            "Ops\u0007": "\"title\" must not contain control characters",
            "a\nb": "\"title\" must not contain control characters",
            "evil\u202etxt.exe": invisible,
            "O\u200bps": invisible,
            "\u2066Ops\u2069": invisible,
            "a\u00a0b": "\"title\" must not contain spaces other than the plain one",
            "\u0301": "\"title\" must not start with a combining mark",
            " Ops": "\"title\" must not start or end with a space",
            "Ops ": "\"title\" must not start or end with a space",
            "": "\"title\" must be 1-128 bytes",
            "t" * 129: "\"title\" must be 1-128 bytes",
        }
        for title, message in cases.items():
            r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                              json_body={"kind": "group", "title": title, "members": [bob.id]})
            assert r.status == 400 and r.body["error"] == {"code": "bad_request", "message": message}, (title, r)
        r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                          json_body={"kind": "group", "title": 7, "members": [bob.id]})
        assert r.status == 400 and r.body["error"]["message"] == "\"title\" must be a string", r
        for title in ("Ops team", "t" * 128, "café 日本語"):
            conv = await api.create_group(alice, [bob.id], title=title)
            assert conv["title"] == title, conv


@async_test(60)
async def test_a_member_removed_while_offline_resumes_without_the_conversation(server):
    """docs/protocol.md "Events": removed while no session was connected, a
    user's resume answers not_found for the conversation, ready leaves it
    out and REST reads are 404; its other conversations resume as usual."""
    async with Harness(server) as h:
        api = h.api
        admin, gone, other = await api.register_many(3, "offrm")
        cid = (await api.create_group(admin, [gone.id, other.id], title="Offline"))["id"]
        keep = (await api.create_group(other, [gone.id], title="Kept"))["id"]
        ca = await h.ws(admin, name="admin")
        cg = await h.ws(gone, name="gone")
        m1 = await ca.send_msg(cid, "before")
        await cg.wait_seq(cid, m1["seq"])
        head_keep = {x["id"]: x["last_seq"] for x in cg.ready["conversations"]}[keep]
        await cg.close()

        await ca.send_msg(cid, "while offline, still a member")
        r = await api.remove_member(admin, cid, gone.id)
        assert r.status == 204, r
        co = await h.ws(other, name="other")
        k2 = await co.send_msg(keep, "in the kept group")

        back = await h.ws(gone, auth="first", name="gone-back",
                          cursors={cid: m1["seq"], keep: head_keep})
        assert cid not in [x["id"] for x in back.ready["conversations"]], back.ready
        err = await back.wait_for(lambda m: m.get("type") == "error" and m.get("conversation") == cid)
        assert err["code"] == "not_found", err
        synced = await back.wait_for(lambda m: m.get("type") == "synced" and m.get("conversation") == keep)
        assert synced["seq"] == k2["seq"], synced
        assert seqs(back.conv_events(keep)) == list(range(head_keep + 1, k2["seq"] + 1))
        await back.ping()
        assert back.conv_events(cid) == [], back.conv_events(cid)
        r = await api.history(gone, cid)
        assert r.status == 404 and r.code == "not_found", r


@async_test(60)
async def test_members_are_added_by_id_or_username_never_both(server):
    """POST /members takes {"username": ...} as workspaces and direct
    conversations do (it was ignored for a group, and with "user" beside it
    the id silently won: audit V); both at once is 400 and adds no one; a
    stranger naming a user gets the same 404 as for a missing group."""
    async with Harness(server) as h:
        api = h.api
        a, b, c, d, x = await api.register_many(5, "addn")
        conv = await api.create_group(a, [b.id], title="Names")
        base = f"/api/v1/conversations/{conv['id']}/members"
        r = await api.req("POST", base, token=a.token, json_body={"username": c.username.upper()})
        assert r.status == 200, r
        assert c.id in [m["id"] for m in r.body["members"]], r
        r = await api.req("POST", base, token=a.token, json_body={"username": d.username, "user": x.id})
        assert r.status == 400 and r.body["error"]["code"] == "bad_request", r
        r = await api.req("POST", base, token=a.token, json_body={"username": "no-such-user-here"})
        assert r.status == 404, r
        r = await api.req("POST", base, token=a.token, json_body={"username": 7})
        assert r.status == 400, r
        r = await api.req("POST", base, token=x.token, json_body={"username": d.username})
        assert r.status == 404 and r.body["error"]["code"] == "not_found", r
        got = (await api.expect(200, "GET", f"/api/v1/conversations/{conv['id']}", token=a.token)).body
        assert sorted(m["id"] for m in got["members"]) == sorted([a.id, b.id, c.id]), got


@async_test(60)
async def test_a_held_handshake_session_ends_at_its_removal(server):
    """protocol.md "What a member sees": a removed user receives its
    `member_removed`, then nothing more, also a session that had not sent
    its first message (authenticated at the handshake: its live delivery
    is held up to 1 s). Audit L5: such a session got the typing, receipt
    and presence frames of the conversation sent after the removal, and,
    when the hold ended, a message in the form an edit, a reaction and a
    pin made after the removal gave it."""
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "hr")
        g = (await api.create_group(alice, [bob.id, carol.id]))["id"]
        b = await h.ws(bob, name="bob-held")          # token at the handshake; sends nothing
        sent = await api.expect(201, "POST", f"/api/v1/conversations/{g}/messages", token=alice.token,
                                json_body={"client_msg_id": "hr1", "body": "plan v1"})
        seq = sent.body["seq"]
        await api.remove_member(alice, g, bob.id)
        await api.expect(200, "PATCH", f"/api/v1/conversations/{g}/messages/{seq}", token=alice.token,
                         json_body={"body": "plan v2, written after bob left"})
        await api.expect((200, 201), "POST", f"/api/v1/conversations/{g}/messages/{seq}/reactions",
                         token=carol.token, json_body={"emoji": "👍"})
        await api.expect((200, 204), "PUT", f"/api/v1/conversations/{g}/pins/{seq}", token=alice.token)
        c = await h.ws(carol, auth="first", name="carol")    # online, typing, reading: after the removal
        await c.send_json({"type": "typing", "conversation": g, "state": "start"})
        await c.send_json({"type": "read", "conversation": g, "seq": seq})
        await c.ping()
        await asyncio.sleep(1.5)                       # past the hold
        mine = [m for m in b.msgs if m.get("conversation") == g or
                (m.get("type") == "presence" and m.get("user") == carol.id)]
        kinds = [(m.get("type"), m.get("kind")) for m in mine]
        assert kinds == [("event", "message"), ("event", "member_removed")], mine
        assert mine[0]["body"] == "plan v1" and "edited_ts" not in mine[0] and not mine[0].get("pinned") \
            and not mine[0].get("reactions"), mine[0]
        # its first message, a sync after the hold ran out, still ends with a
        # synced at its member_removed (audit O8: it was not_found)
        ready_seq = next(c["last_seq"] for c in b.ready["conversations"] if c["id"] == g)
        await b.send_json({"type": "sync", "cursors": {str(g): ready_seq}})
        s = await b.wait_for(lambda m: m.get("type") in ("synced", "error") and m.get("conversation") == g,
                             what="the sync's answer")
        assert s["type"] == "synced" and s["seq"] == mine[1]["seq"], s
