"""Workspaces and channels (protocol.md "Workspaces and channels"; M1, P10):
a workspace's members, its "general" channel, public and private channels,
joining, removal from every channel with the workspace, isolation, quotas."""

from pclient import Harness, async_test, msg_events


async def ws_create(api, user, name="Acme", status=201):
    r = await api.expect(status, "POST", "/api/v1/workspaces", token=user.token, json_body={"name": name})
    return r.body


async def ws_add(api, admin, ws, body, status=200):
    r = await api.expect(status, "POST", f"/api/v1/workspaces/{ws}/members", token=admin.token,
                         json_body=body)
    return r.body


async def channel_create(api, user, ws, name, private=False, members=(), status=201):
    r = await api.expect(status, "POST", f"/api/v1/workspaces/{ws}/channels", token=user.token,
                         json_body={"name": name, "private": private, "members": list(members)})
    return r.body


async def channels(api, user, ws):
    r = await api.expect(200, "GET", f"/api/v1/workspaces/{ws}/channels", token=user.token)
    return {c["title"]: c for c in r.body["channels"]}


@async_test(90)
async def test_workspace_general_channel_joined_live(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob, eve = await api.register_many(3, "wsg")
        w = await ws_create(api, alice, "Acme Corp")
        assert w["name"] == "Acme Corp" and w["role"] == "admin", w
        assert w["member_count"] == 1 and w["channel_count"] == 1, w
        assert [m["id"] for m in w["members"]] == [alice.id], w
        gen = w["general"]
        conv = (await api.expect(200, "GET", f"/api/v1/conversations/{gen}", token=alice.token)).body
        assert conv["kind"] == "channel" and conv["title"] == "general", conv
        assert conv["workspace"] == w["id"] and conv["private"] is False and conv["role"] == "admin", conv
        listed = (await api.expect(200, "GET", "/api/v1/workspaces", token=alice.token)).body["workspaces"]
        assert [x["id"] for x in listed] == [w["id"]] and "members" not in listed[0], listed

        # An outsider learns nothing of it.
        for path in (f"/api/v1/workspaces/{w['id']}", f"/api/v1/workspaces/{w['id']}/channels",
                     f"/api/v1/conversations/{gen}"):
            await api.expect(404, "GET", path, token=eve.token)
        await api.expect(404, "POST", f"/api/v1/workspaces/{w['id']}/members", token=eve.token,
                         json_body={"user": eve.id})
        assert (await api.expect(200, "GET", "/api/v1/workspaces", token=eve.token)).body == {"workspaces": []}

        ca = await h.ws(alice, name="alice")
        cb = await h.ws(bob, name="bob")
        w2 = await ws_add(api, alice, w["id"], {"username": bob.username})
        assert {m["id"]: m["role"] for m in w2["members"]} == {alice.id: "admin", bob.id: "member"}, w2
        assert w2["member_count"] == 2, w2
        again = await ws_add(api, alice, w["id"], {"user": bob.id})          # a no-op
        assert again["member_count"] == 2, again

        # bob's open connection is in general at once: the member_added, then messages.
        added = await cb.wait_for(lambda m: m.get("type") == "event" and m["conversation"] == gen
                                  and m["kind"] == "member_added", what="bob added to general")
        assert added["data"]["user"] == bob.id and added["sender"] == alice.id, added
        ack = await cb.send_msg(gen, "hello from bob")
        await ca.wait_seq(gen, ack["seq"])
        assert [e["body"] for e in msg_events(ca.conv_events(gen))] == ["hello from bob"]
        mine = (await api.expect(200, "GET", "/api/v1/workspaces", token=bob.token)).body["workspaces"]
        assert [(x["id"], x["role"]) for x in mine] == [(w["id"], "member")], mine

        # general is left only with the workspace.
        r = await api.req("POST", f"/api/v1/conversations/{gen}/leave", token=bob.token)
        assert r.status == 400 and r.body["error"]["code"] == "bad_request", r
        r = await api.req("DELETE", f"/api/v1/conversations/{gen}/members/{bob.id}", token=alice.token)
        assert r.status == 400, r

        # Only admins add; adding a user who does not exist is 404.
        await ws_add(api, bob, w["id"], {"user": eve.id}, status=403)
        await ws_add(api, alice, w["id"], {"user": 9007199254740000}, status=404)
        await ws_add(api, alice, w["id"], {"username": "nobody-such-user"}, status=404)


@async_test(120)
async def test_channels_public_private_and_join(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol, eve = await api.register_many(4, "wsc")
        w = await ws_create(api, alice)
        wid = w["id"]
        for u in (bob, carol):
            await ws_add(api, alice, wid, {"user": u.id})

        pub = await channel_create(api, alice, wid, "random")
        assert pub["kind"] == "channel" and pub["private"] is False and pub["workspace"] == wid, pub
        assert [m["id"] for m in pub["members"]] == [alice.id], pub
        sec = await channel_create(api, alice, wid, "secret", private=True, members=[carol.id])
        assert sec["private"] is True and {m["id"] for m in sec["members"]} == {alice.id, carol.id}, sec

        # Names: unique in the workspace, Slack-like.
        await channel_create(api, bob, wid, "random", status=409)
        for bad in ("Random", "has space", "", "x" * 81, "#hash"):
            await channel_create(api, bob, wid, bad, status=400)
        other = await ws_create(api, eve, "Other")
        await channel_create(api, eve, other["id"], "random")            # another workspace: fine
        # Members must be in the workspace; outsiders cannot create there.
        await channel_create(api, alice, wid, "ops", members=[eve.id], status=403)
        await channel_create(api, eve, wid, "ops", status=404)

        # bob sees the public channels and only the private ones he is in.
        seen = await channels(api, bob, wid)
        assert set(seen) == {"general", "random"}, seen
        assert seen["general"]["joined"] is True and seen["random"]["joined"] is False, seen
        assert seen["random"]["member_count"] == 1 and seen["random"]["role"] == "none", seen
        assert set(await channels(api, carol, wid)) == {"general", "random", "secret"}

        # Joining a public channel: its log from the join on.
        cid = pub["id"]
        ca = await h.ws(alice, name="alice")
        early = await ca.send_msg(cid, "before bob")
        cb = await h.ws(bob, name="bob")
        joined = await api.expect(200, "POST", f"/api/v1/conversations/{cid}/join", token=bob.token)
        assert joined.body["role"] == "member" and joined.body["id"] == cid, joined
        assert (await api.expect(200, "POST", f"/api/v1/conversations/{cid}/join", token=bob.token)).body["id"] == cid
        ev = await ca.wait_for(lambda m: m.get("type") == "event" and m["conversation"] == cid
                               and m["kind"] == "member_added", what="bob joined")
        assert ev["sender"] == bob.id and ev["data"]["user"] == bob.id, ev
        late = await ca.send_msg(cid, "after bob")
        await cb.wait_seq(cid, late["seq"])
        assert [e["body"] for e in msg_events(cb.conv_events(cid))] == ["after bob"]
        hist = await api.history_all(bob, cid)
        assert hist[0]["kind"] == "member_added" and all(e["seq"] > early["seq"] for e in hist), hist

        # Private channels cannot be joined or seen by others; outsiders join nothing.
        await api.expect(404, "POST", f"/api/v1/conversations/{sec['id']}/join", token=bob.token)
        await api.expect(404, "POST", f"/api/v1/conversations/{cid}/join", token=eve.token)
        await api.expect(404, "GET", f"/api/v1/conversations/{sec['id']}", token=bob.token)
        # A group is not a channel: nothing to join.
        g = await api.create_group(alice, [carol.id], title="g")
        await api.expect(404, "POST", f"/api/v1/conversations/{g['id']}/join", token=bob.token)

        # Adding to a channel: workspace members only.
        r = await api.add_member(alice, cid, eve.id)
        assert r.status == 403 and r.body["error"]["code"] == "forbidden", r
        # an id no user has is not in the workspace either, as at creation (audit O3)
        for nobody in (999999, 0):
            r = await api.add_member(alice, cid, nobody)
            assert r.status == 403 and r.body["error"]["message"] == "not in the workspace", (nobody, r)
        r = await api.add_member(alice, sec["id"], bob.id)
        assert r.status == 200, r
        assert "secret" in await channels(api, bob, wid)


@async_test(120)
async def test_workspace_removal_leaves_every_channel(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "wsr")
        w = await ws_create(api, alice)
        wid, gen = w["id"], w["general"]
        for u in (bob, carol):
            await ws_add(api, alice, wid, {"user": u.id})
        pub = (await channel_create(api, alice, wid, "random"))["id"]
        sec = (await channel_create(api, alice, wid, "secret", private=True, members=[bob.id]))["id"]
        # bob's own private channel, which alice is not in: a workspace admin removes from it too
        bobs = (await channel_create(api, bob, wid, "bobs", private=True, members=[carol.id]))["id"]
        await api.expect(200, "POST", f"/api/v1/conversations/{pub}/join", token=bob.token)
        cb = await h.ws(bob, name="bob")
        ca = await h.ws(alice, name="alice")

        # A member may not remove others.
        await api.expect(403, "DELETE", f"/api/v1/workspaces/{wid}/members/{carol.id}", token=bob.token)
        await api.expect(204, "DELETE", f"/api/v1/workspaces/{wid}/members/{bob.id}", token=alice.token)
        after = await api.history_all(carol, bobs)
        assert [(e["sender"], e["data"]["user"]) for e in after if e["kind"] == "member_removed"] == \
            [(alice.id, bob.id)], after
        assert (await api.expect(200, "GET", f"/api/v1/conversations/{bobs}", token=carol.token)).body["role"] == "admin"
        for conv in (gen, pub, sec, bobs):
            if conv != bobs:                                    # alice is not in bobs
                e = await ca.wait_for(lambda m, c=conv: m.get("type") == "event" and m["conversation"] == c
                                      and m["kind"] == "member_removed", what=f"bob out of {conv}")
                assert e["data"]["user"] == bob.id and e["sender"] == alice.id, e
            await cb.wait_for(lambda m, c=conv: m.get("type") == "event" and m["conversation"] == c
                              and m["kind"] == "member_removed", what=f"bob told of {conv}")
            await api.expect(404, "GET", f"/api/v1/conversations/{conv}", token=bob.token)
        # ... and stays out: no rejoin, no sends, nothing listed.
        await api.expect(404, "POST", f"/api/v1/conversations/{pub}/join", token=bob.token)
        r = await cb.request({"type": "send", "conversation": pub, "client_msg_id": "after-removal", "body": "x"})
        assert r["type"] == "error" and r["code"] == "not_found", r
        assert (await api.expect(200, "GET", "/api/v1/workspaces", token=bob.token)).body == {"workspaces": []}
        await api.expect(404, "DELETE", f"/api/v1/workspaces/{wid}/members/{bob.id}", token=alice.token)

        # Leaving: the last admin leaves, the earliest-joined member becomes admin.
        await api.expect(204, "POST", f"/api/v1/workspaces/{wid}/leave", token=alice.token)
        w2 = (await api.expect(200, "GET", f"/api/v1/workspaces/{wid}", token=carol.token)).body
        assert [(m["id"], m["role"]) for m in w2["members"]] == [(carol.id, "admin")], w2
        await api.expect(404, "GET", f"/api/v1/conversations/{pub}", token=alice.token)
        hist = await api.history_all(carol, gen)
        assert [e["data"]["user"] for e in hist if e["kind"] == "member_removed"] == [bob.id, alice.id], hist


@async_test(60)
async def test_workspace_quotas_and_bad_input(server_factory):
    s = server_factory(["--workspace-max-members", "2", "--workspace-max-channels", "2"])
    async with Harness(s) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "wsq")
        w = await ws_create(api, alice)
        wid = w["id"]
        await ws_add(api, alice, wid, {"user": bob.id})
        r = await api.req("POST", f"/api/v1/workspaces/{wid}/members", token=alice.token,
                          json_body={"user": carol.id})
        assert r.status == 413 and r.body["error"]["code"] == "quota", r
        await channel_create(api, alice, wid, "second")                   # general + 1
        r = await api.req("POST", f"/api/v1/workspaces/{wid}/channels", token=alice.token,
                          json_body={"name": "third"})
        assert r.status == 413 and r.body["error"]["code"] == "quota", r
        for taken in ("second", "s\u0435cond"):     # a taken name first, in both stores (audit W4)
            r = await api.req("POST", f"/api/v1/workspaces/{wid}/channels", token=alice.token,
                              json_body={"name": taken})
            assert r.status == 409 and r.body["error"]["code"] == "conflict", (taken, r)
        assert (await channels(api, alice, wid)).keys() == {"general", "second"}

        for body in ({}, {"name": ""}, {"name": "x" * 65}, {"name": 5}, {"name": "a\u0001b"}, {"name": "x\u0085y"},
                     {"name": " lead"}, {"name": "trail "}, {"name": "\u200b"}, {"name": "x\u202ey"}):
            r = await api.req("POST", "/api/v1/workspaces", token=alice.token, json_body=body)
            assert r.status == 400 and r.body["error"]["code"] == "bad_request", (body, r)
        r = await api.req("POST", "/api/v1/workspaces", token=alice.token, data=b"not json")
        assert r.status == 400, r
        r = await api.req("POST", f"/api/v1/workspaces/{wid}/channels", token=alice.token,
                          json_body={"name": "ok", "private": "yes"})
        assert r.status == 400, r
        r = await api.req("POST", f"/api/v1/workspaces/{wid}/members", token=alice.token, json_body={"user": "x"})
        assert r.status == 400, r
        for name in ("ge\u200bneral", "a\u00a0b", "x\u202ey", "\u3000", "a\ufeff"):   # look-alikes of other names
            r = await api.req("POST", f"/api/v1/workspaces/{wid}/channels", token=alice.token, json_body={"name": name})
            assert r.status == 400 and r.body["error"]["code"] == "bad_request", (name, r)
        r = await api.req("POST", f"/api/v1/workspaces/{wid}/channels", token=alice.token,
                          json_body={"name": "late", "members": [9007199254740000]})
        assert r.status == 403 and r.body["error"]["code"] == "forbidden", r       # no such user: not in it
        for path in (f"/api/v1/workspaces/9007199254740992", f"/api/v1/workspaces/{wid}/members/9007199254740992"):
            r = await api.req("DELETE" if "members" in path else "GET", path, token=alice.token)
            assert r.status == 400, (path, r)
        await api.expect(404, "GET", "/api/v1/workspaces/abc", token=alice.token)
        await api.expect(404, "GET", f"/api/v1/workspaces/{wid}/nothing", token=alice.token)
        await api.expect(405, "PATCH", f"/api/v1/workspaces/{wid}", token=alice.token, json_body={})
        await api.expect(401, "GET", "/api/v1/workspaces")
        # Nothing above changed the workspace.
        w2 = (await api.expect(200, "GET", f"/api/v1/workspaces/{wid}", token=alice.token)).body
        assert w2["member_count"] == 2 and w2["channel_count"] == 2, w2
        assert len((await api.expect(200, "GET", "/api/v1/workspaces", token=alice.token)).body["workspaces"]) == 1


@async_test(60)
async def test_workspace_admins_make_admins(server):
    """PATCH /workspaces/{id}/members/{user} {"role": ...} (audit G: a
    workspace could not have two admins, nor hand the role over without
    the admin leaving)."""
    async with Harness(server) as h:
        api = h.api
        alice, bob, eve = await api.register_many(3, "wsr")
        w = await ws_create(api, alice, "Roles Inc")
        path = f"/api/v1/workspaces/{w['id']}/members"
        await api.expect(200, "POST", path, token=alice.token, json_body={"user": bob.id})
        r = await api.req("PATCH", f"{path}/{alice.id}", token=bob.token, json_body={"role": "member"})
        assert r.status == 403, r
        r = await api.req("PATCH", f"{path}/{bob.id}", token=alice.token, json_body={"role": "boss"})
        assert r.status == 400, r
        r = await api.req("PATCH", f"{path}/{eve.id}", token=alice.token, json_body={"role": "admin"})
        assert r.status == 404, r
        r = await api.req("PATCH", f"{path}/{bob.id}", token=eve.token, json_body={"role": "admin"})
        assert r.status == 404, r
        r = await api.req("PATCH", f"{path}/{alice.id}", token=alice.token, json_body={"role": "member"})
        assert r.status == 400 and "last admin" in r.body["error"]["message"], r
        r = await api.expect(200, "PATCH", f"{path}/{bob.id}", token=alice.token, json_body={"role": "admin"})
        assert {m["id"]: m["role"] for m in r.body["members"]} == {alice.id: "admin", bob.id: "admin"}, r.body
        # bob, now an admin, adds eve and hands alice back to member
        await api.expect(200, "POST", path, token=bob.token, json_body={"user": eve.id})
        r = await api.expect(200, "PATCH", f"{path}/{alice.id}", token=bob.token, json_body={"role": "member"})
        assert {m["id"]: m["role"] for m in r.body["members"]}[alice.id] == "member", r.body
        listed = (await api.expect(200, "GET", "/api/v1/workspaces", token=alice.token)).body["workspaces"]
        assert listed[0]["role"] == "member", listed


@async_test(60)
async def test_workspace_name_errors_name_the_rule_broken(server):
    """Each refused name is told the rule it broke (protocol.md "POST /api/v1/workspaces")."""
    async with Harness(server) as h:
        api = h.api
        (alice,) = await api.register_many(1, "wsn")
        cases = {
            "Acme ": "\"name\" must not start or end with a space",
            " Acme": "\"name\" must not start or end with a space",
            "Ac\u200bme": "\"name\" must not contain invisible formatting characters "
                          "(zero-width characters, direction marks and overrides; emoji selectors and joiners are fine)",
            "x\u202ey": "\"name\" must not contain invisible formatting characters "
                        "(zero-width characters, direction marks and overrides; emoji selectors and joiners are fine)",
            "a\u0001b": "\"name\" must not contain control characters",
            "\u0000": "\"name\" must not contain control characters",
            "x\u0085y": "\"name\" must not contain control characters",
            "a\u00a0b": "\"name\" must not contain spaces other than the plain one",
            "\u3000": "\"name\" must not contain spaces other than the plain one",
            "": "\"name\" must be 1-64 bytes",
            "x" * 65: "\"name\" must be 1-64 bytes",
        }
        for name, message in cases.items():
            r = await api.req("POST", "/api/v1/workspaces", token=alice.token, json_body={"name": name})
            assert r.status == 400 and r.body["error"] == {"code": "bad_request", "message": message}, (name, r)
        r = await api.req("POST", "/api/v1/workspaces", token=alice.token, json_body={"name": 5})
        assert r.status == 400 and r.body["error"]["message"] == "\"name\" must be a string", r
        await ws_create(api, alice, "x" * 64)
        await ws_create(api, alice, "Acme Corp")


@async_test(60)
async def test_workspace_name_may_not_start_with_a_combining_mark(server):
    """A mark first would sit on whatever is shown before the name."""
    async with Harness(server) as h:
        api = h.api
        (alice,) = await api.register_many(1, "wsm")
        for name in ("\u0301", "\u0301Acme", "\u20ddx", "\u093e"):
            r = await api.req("POST", "/api/v1/workspaces", token=alice.token, json_body={"name": name})
            assert r.status == 400 and r.body["error"] == {
                "code": "bad_request", "message": "\"name\" must not start with a combining mark"}, (name, r)
        for name in ("Cafe\u0301", "e\u0301", "Ac\u0301me"):                 # marks after a letter are fine
            assert (await ws_create(api, alice, name))["name"] == name


@async_test(60)
async def test_channel_name_error_states_the_documented_rule(server):
    """Non-ASCII letters are allowed (protocol.md), so the message says so."""
    async with Harness(server) as h:
        api = h.api
        (alice,) = await api.register_many(1, "chn")
        wid = (await ws_create(api, alice))["id"]
        rule = ("\"name\" must be 1-80 bytes: lowercase ASCII letters, digits, '-', '_', '.' and non-ASCII "
                "characters other than spaces, control and invisible formatting characters, not starting with a "
                "combining mark")
        for name in ("Random", "has space", "", "x" * 81, "a\u200bb", 5, "\u0301x", "x\ufe0f\u200dy"):
            r = await api.req("POST", f"/api/v1/workspaces/{wid}/channels", token=alice.token,
                              json_body={"name": name})
            assert r.status == 400 and r.body["error"] == {"code": "bad_request", "message": rule}, (name, r)
        for name in ("café", "日本語", "\u2764\ufe0f-team", "fam-\U0001f468\u200d\U0001f469\u200d\U0001f467"):
            assert (await channel_create(api, alice, wid, name))["title"] == name


@async_test(60)
async def test_names_take_emoji_with_selectors_and_joiners(server):
    """An emoji keyboard's "❤️" is U+2764 U+FE0F and a family a ZWJ sequence:
    fine in a workspace name and a group title; a selector or joiner
    anywhere else is still invisible formatting (audit G2)."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "wse")
        for name in ("\u2764\ufe0f Team", "\U0001f468\u200d\U0001f469\u200d\U0001f467 fam", "1\ufe0f\u20e3 one",
                     "\u2764\ufe0f\u200d\U0001f525 hot"):
            assert (await ws_create(api, alice, name))["name"] == name
            r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                              json_body={"kind": "group", "title": name, "members": [bob.id]})
            assert r.status == 201 and r.body["title"] == name, (name, r)
        invisible = ("\"name\" must not contain invisible formatting characters (zero-width characters, direction "
                     "marks and overrides; emoji selectors and joiners are fine)")
        for name in ("\ufe0fTeam", "a \ufe0f b", "a\u200db", "\u2764\u200d x", "x\u200d\u2764"):
            r = await api.req("POST", "/api/v1/workspaces", token=alice.token, json_body={"name": name})
            assert r.status == 400 and r.body["error"] == {"code": "bad_request", "message": invisible}, (name, r)


@async_test(60)
async def test_channel_create_outside_the_workspace_is_no_such_workspace(server):
    async with Harness(server) as h:
        api = h.api
        alice, eve = await api.register_many(2, "chw")
        wid = (await ws_create(api, alice))["id"]
        for ws in (wid, wid + 1000):
            r = await api.req("POST", f"/api/v1/workspaces/{ws}/channels", token=eve.token,
                              json_body={"name": "intruders"})
            assert r.status == 404 and r.body["error"] == {"code": "not_found", "message": "no such workspace"}, r


@async_test(60)
async def test_a_private_channel_everyone_left_is_taken_back_by_a_workspace_admin(server):
    """Audit Y2: once its last member left, a private channel could never be
    joined again, kept its name and its place in the quota for good."""
    async with Harness(server) as h:
        api = h.api
        owner, carol, dave = await api.register_many(3, "pvl")
        ws = (await ws_create(api, owner, "Orphans"))["id"]
        for u in (carol, dave):
            await ws_add(api, owner, ws, {"user": u.id})
        ch = await channel_create(api, carol, ws, "plans", private=True)
        cid = ch["id"]
        # while carol is in it, nobody else may join it, a workspace admin neither
        for u in (owner, dave):
            r = await api.req("POST", f"/api/v1/conversations/{cid}/join", token=u.token)
            assert r.status == 404, r
        r = await api.req("POST", f"/api/v1/conversations/{cid}/leave", token=carol.token)
        assert r.status in (200, 204), r
        r = await api.req("POST", f"/api/v1/conversations/{cid}/join", token=dave.token)
        assert r.status == 404, f"a plain member joined an empty private channel: {r!r}"
        # the workspace admin finds it in the channel list (audit L3: only its
        # id could name it); a plain member still does not see it
        listed = (await api.expect(200, "GET", f"/api/v1/workspaces/{ws}/channels", token=owner.token)).body
        mine = [c for c in listed["channels"] if c["id"] == cid]
        assert mine and mine[0]["private"] is True and mine[0]["member_count"] == 0 \
            and mine[0]["joined"] is False, listed
        listed = (await api.expect(200, "GET", f"/api/v1/workspaces/{ws}/channels", token=dave.token)).body
        assert cid not in [c["id"] for c in listed["channels"]], listed
        r = await api.req("POST", f"/api/v1/conversations/{cid}/join", token=owner.token)
        assert r.status in (200, 201), f"the workspace admin could not take it back: {r!r}"
        conv = await api.expect(200, "GET", f"/api/v1/conversations/{cid}", token=owner.token)
        me = [m for m in conv.body["members"] if m["id"] == owner.id]
        assert me and me[0]["role"] == "admin", conv.body
        # now its admin can add members again
        r = await api.add_member(owner, cid, carol.id)
        assert r.status in (200, 201), r


@async_test(90)
async def test_an_unknown_user_is_answered_alike_by_id_and_by_username(server):
    """Adding someone who does not exist: the same answer whether named by
    id or by username, and a non-admin's "admins only" first (audit Y3 #1:
    a username was looked up before the admin check, so a member got 404
    by name and 403 by id)."""
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "wsu")
        w = await ws_create(api, alice, "Unknowns")
        await ws_add(api, alice, w["id"], {"user": bob.id})
        path = f"/api/v1/workspaces/{w['id']}/members"
        ghost = "nosuch" + alice.username[-8:]
        for body in ({"username": ghost}, {"user": 99999999}, {"username": carol.username},
                     {"username": "x"}):
            r = await api.req("POST", path, token=bob.token, json_body=body)
            assert (r.status, r.body["error"]["message"]) == (403, "admins only"), (body, r)
        answers = set()
        for body in ({"username": ghost}, {"user": 99999999}, {"username": "x"}):
            r = await api.req("POST", path, token=alice.token, json_body=body)
            assert r.status == 404, (body, r)
            answers.add(r.body["error"]["message"])
        assert len(answers) == 1, answers
        ch = await channel_create(api, alice, w["id"], "unk")
        cpath = f"/api/v1/conversations/{ch['id']}/members"
        for body in ({"username": ghost}, {"user": 99999999}, {"username": carol.username}):
            r = await api.req("POST", cpath, token=alice.token, json_body=body)
            assert (r.status, r.body["error"]["message"]) == (403, "not in the workspace"), (body, r)
        g = await api.create_group(alice, [bob.id], title="unk group")
        gpath = f"/api/v1/conversations/{g['id']}/members"
        for body in ({"username": ghost}, {"user": 99999999}, {"username": carol.username}):
            r = await api.req("POST", gpath, token=bob.token, json_body=body)
            assert r.status == 403, (body, r)
        answers = set()
        for body in ({"username": ghost}, {"user": 99999999}):
            r = await api.req("POST", gpath, token=alice.token, json_body=body)
            assert r.status == 404, (body, r)
            answers.add(r.body["error"]["message"])
        assert len(answers) == 1, answers


@async_test(90)
async def test_a_channel_name_that_looks_like_another_is_a_conflict(server):
    """Names that look alike are one name (audit Y3 #2: "gеneral" with a
    Cyrillic е, a fullwidth "ｇｅｎｅｒａｌ" and "café" typed as e + U+0301
    were new channels beside the real ones); two all-ASCII names are told
    apart as typed."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "wsl")
        w = await ws_create(api, alice, "Lookalikes")
        await ws_add(api, alice, w["id"], {"user": bob.id})
        path = f"/api/v1/workspaces/{w['id']}/channels"
        for name in ("g\u0435neral", "\uff47\uff45\uff4e\uff45\uff52\uff41\uff4c", "\u210aeneral"):
            r = await api.req("POST", path, token=bob.token, json_body={"name": name})
            assert r.status == 409, (name, r)
            assert r.body["error"]["message"] == "the name looks like another channel's", r
        for name in ("general\u2800", "\u2800", "general\U00013430", "general\U0001bca0"):   # blank or invisible (O5)
            await channel_create(api, bob, w["id"], name, status=400)
        await channel_create(api, alice, w["id"], "caf\u00e9")
        await channel_create(api, bob, w["id"], "cafe\u0301", status=409)
        await channel_create(api, alice, w["id"], "team1")
        await channel_create(api, alice, w["id"], "teaml")          # ASCII: as typed
        await channel_create(api, alice, w["id"], "\ufb01le")
        await channel_create(api, bob, w["id"], "file", status=409)
        await channel_create(api, alice, w["id"], "secret", private=True)
        await channel_create(api, bob, w["id"], "\u0455ecret", status=409)
        names = set(await channels(api, alice, w["id"]))
        assert names == {"general", "caf\u00e9", "team1", "teaml", "\ufb01le", "secret"}, names
        other = await ws_create(api, bob, "Elsewhere")
        await channel_create(api, bob, other["id"], "cafe\u0301")    # another workspace's own
