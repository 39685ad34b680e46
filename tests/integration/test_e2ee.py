"""End-to-end encryption (docs/protocol.md "End-to-end encryption"): the key
directory, ciphertext messages, end-to-end encrypted conversations, device
events. Two clients built on libsodium (python3-nacl) do an X3DH-style key
agreement through the directory and exchange messages the server cannot
read.

Written from the document:
  * X3DH round trip: the bundle's signed prekey verifies, a one-time prekey
    is consumed, the recipient decrypts live and from history, the database
    holds no plaintext, search finds neither plaintext nor ciphertext
    (test_e2ee_x3dh_roundtrip);
  * a marked conversation refuses plain sends (WebSocket and REST) and
    edits; ciphertext into an unmarked one is refused
    (test_e2ee_plain_refused);
  * keys_low reaches the owner when a claim leaves fewer than 10
    (test_e2ee_keys_low);
  * a new device (and a logged-out one) is an `e2ee` devices event in the
    conversations a peer shares, live and in history
    (test_e2ee_device_events);
  * authorization: strangers get 404 for devices and bundles, only admins
    mark a group, a user's DELETE touches only its own device
    (test_e2ee_authz);
  * bad input gets clear errors and changes nothing (test_e2ee_bad_input).
"""

import asyncio
import base64
import json
import os
import re
import secrets
import struct

import pytest

pytest.importorskip("nacl", reason="python3-nacl (scripts/deps.sh) plays the clients")

import nacl.bindings as nb  # noqa: E402
import nacl.encoding  # noqa: E402
import nacl.hash  # noqa: E402
import nacl.secret  # noqa: E402
import nacl.signing  # noqa: E402
from nacl.public import PrivateKey  # noqa: E402

from pclient import Api, Harness, async_test, cmid  # noqa: E402
from test_actions import _pg_hits, _sqlite_hits  # noqa: E402


def b64(b):
    return base64.b64encode(b).decode()


def unb64(s):
    return base64.b64decode(s, validate=True)


class Device:
    """A client device's keys (all private keys stay here)."""

    def __init__(self, n_otks=5, first_id=1):
        self.ik = nacl.signing.SigningKey.generate()                   # Ed25519 identity
        self.ik_x = self.ik.to_curve25519_private_key()                # its X25519 form
        self.spk = PrivateKey.generate()
        self.spk_id = 7
        self.otks = {first_id + i: PrivateKey.generate() for i in range(n_otks)}
        self.id = None                                                 # the server's device id

    def upload_body(self):
        spk_pub = bytes(self.spk.public_key)
        return {"identity_key": b64(bytes(self.ik.verify_key)),
                "signed_prekey": {"id": self.spk_id, "key": b64(spk_pub),
                                  "signature": b64(self.ik.sign(spk_pub).signature)},
                "one_time_prekeys": [{"id": i, "key": b64(bytes(k.public_key))}
                                     for i, k in self.otks.items()]}

    async def upload(self, api, token):
        r = await api.expect(200, "PUT", "/api/v1/keys", token=token, json_body=self.upload_body())
        self.id = r.body["device"]
        assert r.body["one_time_prekeys"] == len(self.otks), r
        return r.body


def kdf(*dhs):
    return nacl.hash.blake2b(b"".join(dhs), digest_size=32, encoder=nacl.encoding.RawEncoder)


def x3dh_send(sender, bundle_dev, plaintext):
    """The initiator's side: verify the bundle, agree on a key, encrypt.
    The body: IK_A (Ed25519, 32) | EK_A (32) | one-time prekey id (8) | box."""
    ik_b_ed = unb64(bundle_dev["identity_key"])
    spk_b = unb64(bundle_dev["signed_prekey"]["key"])
    nacl.signing.VerifyKey(ik_b_ed).verify(spk_b, unb64(bundle_dev["signed_prekey"]["signature"]))
    ik_b = nb.crypto_sign_ed25519_pk_to_curve25519(ik_b_ed)
    otk = bundle_dev["one_time_prekey"]
    ek = PrivateKey.generate()
    dhs = [nb.crypto_scalarmult(bytes(sender.ik_x), spk_b),
           nb.crypto_scalarmult(bytes(ek), ik_b),
           nb.crypto_scalarmult(bytes(ek), spk_b)]
    if otk:
        dhs.append(nb.crypto_scalarmult(bytes(ek), unb64(otk["key"])))
    box = nacl.secret.SecretBox(kdf(*dhs)).encrypt(plaintext.encode())
    head = bytes(sender.ik.verify_key) + bytes(ek.public_key) + struct.pack(">q", otk["id"] if otk else -1)
    return b64(head + bytes(box))


def x3dh_receive(me, body):
    raw = unb64(body)
    ik_a = nb.crypto_sign_ed25519_pk_to_curve25519(raw[:32])
    ek_a, (otk_id,), box = raw[32:64], struct.unpack(">q", raw[64:72]), raw[72:]
    dhs = [nb.crypto_scalarmult(bytes(me.spk), ik_a),
           nb.crypto_scalarmult(bytes(me.ik_x), ek_a),
           nb.crypto_scalarmult(bytes(me.spk), ek_a)]
    if otk_id >= 0:
        dhs.append(nb.crypto_scalarmult(bytes(me.otks.pop(otk_id)), ek_a))   # used once
    return nacl.secret.SecretBox(kdf(*dhs)).decrypt(box).decode()


async def connect(h, user, name):
    ws = await h.ws(user, name=name)
    await ws.ping()                                   # live at once
    return ws


async def e2ee_dm(api, user, peer_id):
    r = await api.expect((200, 201), "POST", "/api/v1/conversations", token=user.token,
                         json_body={"kind": "direct", "user": peer_id, "e2ee": True})
    assert r.body["e2ee"] is True, r
    return r.body["id"]


def ct_send(conv, payloads, c=None):
    return {"type": "send", "conversation": conv, "client_msg_id": c or cmid(), "kind": "ciphertext",
            "payloads": payloads}


@async_test(90)
async def test_e2ee_x3dh_roundtrip(server, mode):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "x3")
        da, dbob = Device(), Device()
        await da.upload(api, alice.token)
        await dbob.upload(api, bob.token)
        conv = await e2ee_dm(api, alice, bob.id)
        b = await connect(h, bob, "bob")

        r = await api.expect(200, "GET", f"/api/v1/users/{bob.id}/devices", token=alice.token)
        assert [d["device"] for d in r.body["devices"]] == [dbob.id], r
        assert r.body["devices"][0]["one_time_prekeys"] == 5, r
        r = await api.expect(200, "POST", f"/api/v1/users/{bob.id}/bundle", token=alice.token)
        (dev,) = r.body["devices"]
        assert dev["device"] == dbob.id and dev["one_time_prekey"]["id"] == 1, r
        r = await api.expect(200, "GET", f"/api/v1/users/{bob.id}/devices", token=alice.token)
        assert r.body["devices"][0]["one_time_prekeys"] == 4, r    # consumed

        secret_word = "plaintext" + secrets.token_hex(6)
        body = x3dh_send(da, dev, f"hello bob {secret_word}")
        a = await connect(h, alice, "alice")
        sent = await a.request(ct_send(conv, [{"device": dbob.id, "type": 0, "body": body}]))
        assert sent.get("type") == "sent", sent
        await b.wait_seq(conv, sent["seq"])
        (ev,) = [e for e in b.conv_events(conv) if e["seq"] == sent["seq"]]
        assert ev["kind"] == "message" and ev.get("body", "") == "", ev
        (p,) = ev["data"]["ciphertext"]
        assert p == {"device": dbob.id, "type": 0, "body": body}, ev
        assert x3dh_receive(dbob, p["body"]) == f"hello bob {secret_word}"

        # the answer goes back over REST; history holds both
        reply_body = nacl.secret.SecretBox(b"k" * 32).encrypt(b"hi alice")
        r = await api.expect(201, "POST", f"/api/v1/conversations/{conv}/messages", token=bob.token,
                             json_body={"client_msg_id": cmid(), "kind": "ciphertext",
                                        "payloads": [{"device": da.id, "type": 1, "body": b64(bytes(reply_body))}]})
        hist = await api.history_all(bob, conv)
        msgs = [e for e in hist if e["kind"] == "message"]
        assert [m["data"]["ciphertext"][0]["device"] for m in msgs][-2:] == [dbob.id, da.id], hist
        assert any(e["kind"] == "e2ee" and e["data"] == {"op": "enabled"} for e in hist), hist

        # the server holds no plaintext, and search finds nothing of it
        if mode == "cluster":
            hits = await asyncio.to_thread(_pg_hits, server, [secret_word])
        else:
            hits = await asyncio.to_thread(_sqlite_hits, os.path.join(server.data_dir, "parley.db"),
                                           [secret_word])
        assert not hits, hits
        token = max(re.split(r"[^A-Za-z0-9]", body), key=len)         # a whole word of the base64
        for q in (secret_word, token, "ciphertext", "device"):
            r = await api.expect(200, "GET", f"/api/v1/search?q={q}", token=bob.token)
            assert r.body["results"] == [], (q, r)


@async_test(60)
async def test_e2ee_plain_refused(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "pr")
        plain = (await api.open_dm(alice, bob.id))["id"]
        g = (await api.create_group(alice, [bob.id], title="secret"))["id"]
        a = await connect(h, alice, "alice")
        ok = await a.request({"type": "send", "conversation": g, "client_msg_id": cmid(), "body": "before"})
        assert ok.get("type") == "sent", ok
        r = await api.req("POST", f"/api/v1/conversations/{g}/e2ee", token=bob.token)
        assert r.status == 403 and r.code == "forbidden", r                # not an admin
        r = await api.expect(200, "POST", f"/api/v1/conversations/{g}/e2ee", token=alice.token)
        assert r.body == {"id": g, "e2ee": True, "changed": True}, r
        r = await api.expect(200, "POST", f"/api/v1/conversations/{g}/e2ee", token=alice.token)
        assert r.body["changed"] is False, r
        r = await api.expect(200, "GET", f"/api/v1/conversations/{g}", token=bob.token)
        assert r.body["e2ee"] is True, r

        e = await a.request({"type": "send", "conversation": g, "client_msg_id": cmid(), "body": "plain"})
        assert e.get("type") == "error" and e["code"] == "forbidden" and "encrypted" in e["message"], e
        r = await api.req("POST", f"/api/v1/conversations/{g}/messages", token=bob.token,
                          json_body={"client_msg_id": cmid(), "body": "plain"})
        assert r.status == 403 and r.code == "forbidden", r
        pl = [{"device": 1, "type": 1, "body": b64(b"opaque bytes")}]
        e = await a.request(ct_send(plain, pl))
        assert e.get("type") == "error" and e["code"] == "bad_request", e
        sent = await a.request(ct_send(g, pl))
        assert sent.get("type") == "sent", sent
        e = await a.request({"type": "edit", "conversation": g, "seq": sent["seq"], "body": "changed"})
        assert e.get("type") == "error" and e["code"] == "forbidden", e
        e = await a.request({"type": "edit", "conversation": g, "seq": ok["seq"], "body": "changed"})
        assert e.get("type") == "error" and e["code"] == "forbidden", e      # old plain ones too
        d = await a.request({"type": "delete", "conversation": g, "seq": sent["seq"]})
        assert d.get("type") != "error", d
        # the plain message from before the mark stays searchable
        for _ in range(50):
            r = await api.expect(200, "GET", "/api/v1/search?q=before", token=bob.token)
            if r.body["results"]:
                break
            await asyncio.sleep(0.1)
        assert [x["seq"] for x in r.body["results"]] == [ok["seq"]], r


@async_test(60)
async def test_e2ee_keys_low(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "kl")
        await e2ee_dm(api, alice, bob.id)
        dbob = Device(n_otks=11)
        await dbob.upload(api, bob.token)
        b = await connect(h, bob, "bob")
        r = await api.expect(200, "POST", f"/api/v1/users/{bob.id}/bundle", token=alice.token)
        assert r.body["devices"][0]["one_time_prekey"]["id"] == 1, r      # 10 left: not low yet
        r = await api.expect(200, "POST", f"/api/v1/users/{bob.id}/bundle", token=alice.token)
        low = await b.wait_for(lambda m: m.get("type") == "keys_low", what="keys_low")
        assert low == {"type": "keys_low", "device": dbob.id, "one_time_prekeys": 9}, low
        assert not [m for m in b.msgs if m.get("type") == "keys_low" and m["one_time_prekeys"] == 10]
        # topping up
        r = await api.expect(200, "PUT", "/api/v1/keys", token=bob.token,
                             json_body={"one_time_prekeys": [{"id": 100 + i, "key": b64(bytes(
                                 PrivateKey.generate().public_key))} for i in range(5)]})
        assert r.body["one_time_prekeys"] == 14, r
        r = await api.expect(200, "GET", "/api/v1/keys", token=bob.token)
        assert r.body["device"] == dbob.id and r.body["one_time_prekeys"] == 14, r
        # exhausted: the bundle says so
        for _ in range(14):
            await api.expect(200, "POST", f"/api/v1/users/{bob.id}/bundle", token=alice.token)
        r = await api.expect(200, "POST", f"/api/v1/users/{bob.id}/bundle", token=alice.token)
        assert r.body["devices"][0]["one_time_prekey"] is None, r


@async_test(60)
async def test_e2ee_device_events(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "de")
        g = (await api.create_group(alice, [bob.id], title="devs"))["id"]
        await api.expect(200, "POST", f"/api/v1/conversations/{g}/e2ee", token=alice.token)
        plain = (await api.open_dm(alice, bob.id))["id"]
        a = await connect(h, alice, "alice")
        d1 = Device()
        await d1.upload(api, bob.token)
        ev = await a.wait_for(lambda m: m.get("type") == "event" and m.get("kind") == "e2ee"
                              and m["data"].get("op") == "devices", what="devices event")
        assert ev["conversation"] == g and ev["data"] == {"op": "devices", "user": bob.id}, ev
        # a second device (a new login) and its list
        login2 = await api.login(bob)
        d2 = Device()
        await d2.upload(api, login2["access_token"])
        r = await api.expect(200, "GET", f"/api/v1/users/{bob.id}/devices", token=alice.token)
        assert sorted(d["device"] for d in r.body["devices"]) == sorted([d1.id, d2.id]), r
        await a.wait_until(lambda: len([m for m in a.conv_events(g) if m.get("kind") == "e2ee"]) >= 2,
                           what="second devices event")
        # re-uploading the same identity is no change: no event
        await d2.upload(api, login2["access_token"])
        await a.ping()
        n_before = len([e for e in await api.history_all(alice, g) if e["kind"] == "e2ee"])
        assert n_before == 3, n_before                        # enabled, d1, d2
        # logout: the device is gone, announced (on resume: in history)
        await a.close()
        await api.expect(204, "POST", "/api/v1/auth/logout", token=login2["access_token"],
                         json_body={"refresh_token": login2["refresh_token"]})
        for _ in range(50):
            r = await api.expect(200, "GET", f"/api/v1/users/{bob.id}/devices", token=alice.token)
            hist = await api.history_all(alice, g)
            if len([e for e in hist if e["kind"] == "e2ee"]) == n_before + 1:
                break
            await asyncio.sleep(0.1)
        assert [d["device"] for d in r.body["devices"]] == [d1.id], r
        assert len([e for e in hist if e["kind"] == "e2ee"]) == n_before + 1, hist
        assert hist[-1]["data"] == {"op": "devices", "user": bob.id}, hist
        # nothing in the unmarked conversation
        hp = await api.history_all(alice, plain)
        assert not [e for e in hp if e["kind"] == "e2ee"], hp


@async_test(60)
async def test_e2ee_authz(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob, mallory = await api.register_many(3, "az")
        await api.open_dm(alice, bob.id)
        d = Device()
        await d.upload(api, bob.token)
        for method, path in (("GET", f"/api/v1/users/{bob.id}/devices"),
                             ("POST", f"/api/v1/users/{bob.id}/bundle")):
            r = await api.req(method, path, token=mallory.token)
            assert r.status == 404 and r.code == "not_found", r
            r = await api.req(method, path)
            assert r.status == 401, r
        r = await api.req("GET", "/api/v1/users/999999999/devices", token=alice.token)
        assert r.status == 404, r
        # id 0 is answered as any id no user has, the same message (audit Z3)
        for method, what in (("GET", "devices"), ("POST", "bundle")):
            r0 = await api.req(method, f"/api/v1/users/0/{what}", token=alice.token)
            r9 = await api.req(method, f"/api/v1/users/999999999/{what}", token=alice.token)
            assert r0.status == r9.status == 404 and r0.body == r9.body, (what, r0, r9)
        # mallory deleting "her" keys touches only her device
        r = await api.req("DELETE", "/api/v1/keys", token=mallory.token)
        assert r.status == 204, r
        r = await api.expect(200, "GET", f"/api/v1/users/{bob.id}/devices", token=alice.token)
        assert [x["device"] for x in r.body["devices"]] == [d.id] and \
            r.body["devices"][0]["one_time_prekeys"] == 5, r
        # no claim consumed anything for the stranger
        r = await api.req("GET", "/api/v1/keys", token=mallory.token)
        assert r.status == 404, r
        r = await api.req("POST", f"/api/v1/conversations/{(await api.open_dm(alice, bob.id))['id']}/e2ee",
                          token=mallory.token)
        assert r.status == 404, r


@async_test(60)
async def test_e2ee_a_block_closes_the_key_directory_between_the_pair(server):
    """A direct conversation under a block is not a shared conversation for
    the key directory (as for presence_query): the blocked user cannot list
    the blocker's devices or drain their one-time prekeys; a shared group
    still opens it, and an unblock restores it (audit L2 F1)."""
    async with Harness(server) as h:
        api = h.api
        alice, eve, carol = await api.register_many(3, "kb")
        dm = (await api.open_dm(alice, eve.id))["id"]
        await api.expect(200, "POST", f"/api/v1/conversations/{dm}/e2ee", token=alice.token)
        d = Device()
        await d.upload(api, alice.token)
        await api.expect(200, "GET", f"/api/v1/users/{alice.id}/devices", token=eve.token)
        await api.expect(200, "PUT", f"/api/v1/users/{eve.id}/block", token=alice.token)
        # under the block a device change of either is no event there (audit L4)
        before = (await api.history_all(eve, dm))[-1]["seq"]
        d2 = Device()
        await d2.upload(api, (await api.login(alice))["access_token"])
        await asyncio.sleep(0.5)                      # the announcement follows the answer
        after = await api.history_all(eve, dm)
        assert after[-1]["seq"] == before, [e for e in after if e["seq"] > before]
        for who, peer in ((eve, alice), (alice, eve)):
            for method, path in (("GET", f"/api/v1/users/{peer.id}/devices"),
                                 ("POST", f"/api/v1/users/{peer.id}/bundle")):
                r = await api.req(method, path, token=who.token)
                assert r.status == 404 and r.code == "not_found", (method, path, r)
        r = await api.expect(200, "GET", f"/api/v1/users/{alice.id}/devices", token=alice.token)
        assert r.body["devices"][0]["one_time_prekeys"] == 5, r       # nothing was taken
        # a group they share still counts
        g = (await api.create_group(carol, [alice.id, eve.id], title="both"))["id"]
        r = await api.expect(200, "POST", f"/api/v1/users/{alice.id}/bundle", token=eve.token)
        assert r.body["devices"][0]["one_time_prekey"] is not None, r
        await api.expect(204, "POST", f"/api/v1/conversations/{g}/leave", token=eve.token)
        r = await api.req("GET", f"/api/v1/users/{alice.id}/devices", token=eve.token)
        assert r.status == 404, r
        await api.expect(200, "DELETE", f"/api/v1/users/{eve.id}/block", token=alice.token)
        r = await api.expect(200, "GET", f"/api/v1/users/{alice.id}/devices", token=eve.token)
        assert r.body["devices"][0]["one_time_prekeys"] == 4, r


@async_test(60)
async def test_e2ee_bad_input(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "bi")
        conv = await e2ee_dm(api, alice, bob.id)
        d = Device()
        good = d.upload_body()

        def variant(**kw):
            b = json.loads(json.dumps(good))
            for k, v in kw.items():
                if v is None:
                    b.pop(k, None)
                else:
                    b[k] = v
            return b

        spk = dict(good["signed_prekey"])
        other = nacl.signing.SigningKey.generate()
        cases = [
            (variant(identity_key=b64(b"x" * 33)), "identity_key"),                 # oversized
            (variant(identity_key="not base64!"), "identity_key"),
            (variant(identity_key=good["identity_key"].rstrip("=")), "identity_key"),  # unpadded
            (variant(signed_prekey=dict(spk, key=b64(b"k" * 64))), "signed_prekey.key"),
            (variant(signed_prekey=dict(spk, signature=b64(other.sign(b"x").signature))), "verify"),
            (variant(signed_prekey=dict(spk, id=-1)), "signed_prekey"),
            (variant(one_time_prekeys=[{"id": i, "key": good["identity_key"]} for i in range(101)]),
             "too many"),
            (variant(one_time_prekeys=[{"id": 1, "key": good["identity_key"]}] * 2), "duplicate"),
            (variant(one_time_prekeys=[{"id": 1, "key": b64(b"short")}]), "one-time prekey"),
            (variant(signed_prekey=None), "go together"),
            (variant(identity_key=None, signed_prekey=None), "first"),   # prekeys before an identity
        ]
        for body, why in cases:
            r = await api.req("PUT", "/api/v1/keys", token=alice.token, json_body=body)
            assert r.status == 400 and r.code == "bad_request" and why in r.body["error"]["message"], (why, r)
        r = await api.req("GET", "/api/v1/keys", token=alice.token)
        assert r.status == 404, r                                          # nothing was stored
        # the cap on held prekeys
        await d.upload(api, alice.token)
        for k in range(1, 3):
            r = await api.req("PUT", "/api/v1/keys", token=alice.token, json_body={"one_time_prekeys": [
                {"id": 1000 * k + i, "key": good["identity_key"]} for i in range(100)]})
        assert r.status == 400 and "too many" in r.body["error"]["message"], r
        r = await api.expect(200, "GET", "/api/v1/keys", token=alice.token)
        assert r.body["one_time_prekeys"] == 105, r
        r = await api.req("PUT", "/api/v1/keys", token=alice.token, data=b"[1]")
        assert r.status == 400 and r.code == "bad_json", r
        r = await api.req("PATCH", "/api/v1/keys", token=alice.token, json_body={})
        assert r.status == 405, r

        a = await connect(h, alice, "alice")
        pl = {"device": 1, "type": 0, "body": b64(b"x" * 10)}
        for payloads, code in (
                ([], "bad_request"), ("x", "bad_request"), ([dict(pl, body="%%%")], "bad_request"),
                ([dict(pl, type=256)], "bad_request"), ([dict(pl, device=0)], "bad_request"),
                ([pl, pl], "bad_request"), ([dict(pl, device=i + 1) for i in range(101)], "too_large"),
                ([dict(pl, body=b64(b"x" * 30000))], "too_large")):
            e = await a.request(ct_send(conv, payloads))
            assert e.get("type") == "error" and e["code"] == code, (payloads if len(str(payloads)) < 200 else "...", e)
        e = await a.request({"type": "send", "conversation": conv, "client_msg_id": cmid(), "kind": "bogus",
                             "body": "x"})
        assert e.get("type") == "error" and e["code"] == "bad_request" and "kind" in e["message"], e
        r = await api.req("POST", f"/api/v1/conversations/{conv}/messages", token=alice.token,
                          json_body={"client_msg_id": cmid(), "kind": "ciphertext", "payloads": []})
        assert r.status == 400 and r.code == "bad_request", r
        # a ciphertext send carries no plaintext body: refused, not dropped
        e = await a.request(dict(ct_send(conv, [pl]), body="zebrafish"))
        assert e.get("type") == "error" and e["code"] == "bad_request" and "body" in e["message"], e
        r = await api.req("POST", f"/api/v1/conversations/{conv}/messages", token=alice.token,
                          json_body={"client_msg_id": cmid(), "kind": "ciphertext", "payloads": [pl],
                                     "body": "zebrafish"})
        assert r.status == 400 and r.code == "bad_request", r
        hist = await api.history_all(alice, conv)
        assert not [x for x in hist if x["kind"] == "message"], hist      # nothing was stored


@async_test(90)
async def test_e2ee_concurrent_claims(server, mode):
    """40 bundle fetches at once (spread over every node in cluster mode) for
    a device holding 25 one-time prekeys: each key is handed out once, all
    25 are, and the other 15 fetches say none was left."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "cc")
        await api.open_dm(alice, bob.id)
        d = Device(n_otks=25)
        await d.upload(api, bob.token)
        urls = list(getattr(server, "node_urls", None) or [server.base_url])
        apis = [Api(u, h.session) for u in urls]

        async def claim(i):
            r = await apis[i % len(apis)].expect(200, "POST", f"/api/v1/users/{bob.id}/bundle",
                                                 token=alice.token)
            return r.body["devices"][0]["one_time_prekey"]

        got = await asyncio.gather(*[claim(i) for i in range(40)])
        ids = [k["id"] for k in got if k]
        assert sorted(ids) == sorted(d.otks), (len(ids), sorted(ids))
        assert len([k for k in got if k is None]) == 15, got
        keys = {k["id"]: k["key"] for k in got if k}
        assert all(keys[i] == b64(bytes(d.otks[i].public_key)) for i in ids)
