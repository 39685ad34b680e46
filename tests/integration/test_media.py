"""Media (docs/protocol.md "Media"): uploads, downloads, limits, inert
serving, Range, signed URLs, dedup, resumable uploads, collection, and the
memory an upload costs. Every test runs in both modes; in cluster mode the
nodes share one --media-dir (the blob store every node reaches) and
HAProxy spreads the requests over them.

Servers are costly to start (a cluster is PostgreSQL, Redis, HAProxy and
two nodes), so each test starts one per configuration and runs the
check_* coroutines below on it in turn.

Written from the document:
  * each kind uploads and downloads byte for byte, by bearer token and by
    signed URL (check_media_kinds_roundtrip); identical uploads share one
    blob file (check_media_dedup_and_digest);
  * limits: per kind (declared and sniffed) and per user quota answer 413
    (check_media_limits);
  * lying types are corrected, HTML/SVG/scripts/executables are served
    inert: octet-stream, attachment, nosniff, CSP sandbox; path-like names
    are cut to their last part (check_media_inert_serving);
  * Range: first bytes, middle, suffix, several (multipart/byteranges),
    unsatisfiable 416; ETag/If-None-Match 304 (check_media_ranges);
    If-Range: the strong ETag lets the range apply, anything else (a weak
    or other tag, a date) gets the whole file (check_media_if_range); a
    HEAD ignores Range: 200, the whole length (check_media_head_ignores_range);
  * a download URL answers another method than GET/HEAD with 405 and
    Allow: GET, HEAD (check_media_download_methods);
  * signed URLs: forged, tampered and expired ones 403; other users 404
    (check_media_access);
  * a resumable upload resumes after a dropped connection (check_media_resumable);
  * one PATCH at a time per upload: a second one while the first is
    mid-body is 409 conflict and writes nothing; once the first ends
    (answered, or its connection dropped) the next is taken, and the file
    is byte for byte what was sent (check_media_patch_one_at_a_time);
  * a request pipelined behind an upload's body is answered after it
    (check_media_pipelined);
  * an upload no message references is collected after the grace period
    (check_media_gc);
  * a 100 MB upload grows the server's RSS by far less than 100 MB
    (check_media_upload_memory_bounded);
  * image thumbnails are made off the event loop, with dimensions and a
    placeholder (check_media_thumbnail);
  * messages attach media: live and read events carry them with signed
    URLs, members may fetch them and others not, only one's own uploads,
    an edit keeps them, search's has_media filter, and deleting the last
    message referencing a blob frees it after the grace period
    (check_media_attachments).
"""

import asyncio
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import time
import urllib.parse
import zlib

import aiohttp
import pytest

from pclient import Harness, async_test


def png(w, h):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    raw = b"".join(b"\x00" + bytes(((x * 9) % 256, (y * 7) % 256, ((x + y) * 3) % 256) * 1
                                    for x in range(w) for _ in [0]).join([b""]) if False else
                   b"\x00" + b"".join(bytes(((x * 9) % 256, (y * 7) % 256, ((x + y) * 3) % 256)) for x in range(w))
                   for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def wav(n=4000):
    return (b"RIFF" + struct.pack("<I", 36 + n) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, 8000, 8000, 1, 8) + b"data" + struct.pack("<I", n) +
            bytes((i * 13) % 256 for i in range(n)))


def mp4():
    ftyp = struct.pack(">I", 24) + b"ftypisom" + struct.pack(">I", 512) + b"isomiso2"
    mdat = os.urandom(3000)
    return ftyp + struct.pack(">I", 8 + len(mdat)) + b"mdat" + mdat


def pdf():
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n" + b" " * 500


@pytest.fixture
def media_dirs():
    """The --media-dir of each server a test starts (in cluster mode shared
    by its nodes: the blob store every node reaches); removed afterwards."""
    made = []
    yield made
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def media_server(server_factory, media_dirs, *extra):
    d = tempfile.mkdtemp(prefix="parley-media-")
    media_dirs.append(d)
    s = server_factory(["--media-dir", d] + list(extra))
    s.media_dir = d
    return s


def blob_files(d):
    out = []
    for root, dirs, files in os.walk(d):
        if os.path.relpath(root, d).split(os.sep)[0] in ("tmp", "uploads"):
            continue
        out += [f for f in files if re.fullmatch(r"[0-9a-f]{64}", f)]
    return out


async def upload(api, user, data, name="f.bin", type_=None, sha=None, status=201, query=None):
    q = {"name": name}
    if type_:
        q["type"] = type_
    if sha:
        q["sha256"] = sha
    q.update(query or {})
    r = await api.req("POST", "/api/v1/media?" + urllib.parse.urlencode(q), token=user.token, data=data,
                      headers={"Content-Type": type_ or "application/octet-stream"}, timeout=120)
    assert r.status == status, f"upload {name}: expected {status}, got {r!r}"
    if status == 201:
        b = r.body
        assert set(b) >= {"id", "kind", "mime", "size", "name", "sha256", "url", "url_expires"}, b
        assert b["size"] == len(data) and b["sha256"] == hashlib.sha256(data).hexdigest(), b
    return r.body


async def get(session, url, headers=None):
    async with session.get(url, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=60)) as r:
        return r.status, await r.read(), r.headers


def hdr(r, name):
    """A response header from pclient's Resp (a plain dict: HAProxy lower-cases names)."""
    return {k.lower(): v for k, v in r.headers.items()}.get(name.lower())


def check_inert_headers(h):
    assert h["X-Content-Type-Options"] == "nosniff", h
    assert h["Content-Security-Policy"] == "default-src 'none'; sandbox", h


async def check_media_kinds_roundtrip(h, srv):
    a = await h.api.register("med")
    cases = [(png(8, 6), "p.png", "image/png", "image", "inline"),
             (wav(), "v.wav", "audio/wav", "audio", "inline"),
             (mp4(), "m.mp4", "video/mp4", "video", "inline"),
             (pdf(), "d.pdf", "application/pdf", "file", "attachment")]
    for data, name, t, kind, disp in cases:
        m = await upload(h.api, a, data, name, t)
        assert m["kind"] == kind, m
        assert m["name"] == name, m
        bearer = {"Authorization": f"Bearer {a.token}"}
        st, body, hd = await get(h.session, f"{srv.base_url}/api/v1/media/{m['id']}", bearer)
        assert st == 200 and body == data, (st, hd)
        assert hd["ETag"] == f"\"{m['sha256']}\"", hd
        assert hd["Content-Disposition"].startswith(disp + ";"), hd
        assert hd["Accept-Ranges"] == "bytes", hd
        check_inert_headers(hd)
        if kind != "file":
            assert hd["Content-Type"] == m["mime"], (hd, m)
        st, body, hd = await get(h.session, srv.base_url + m["url"])      # signed: no header
        assert st == 200 and body == data, st
        check_inert_headers(hd)
        info = await h.api.expect(200, "GET", f"/api/v1/media/{m['id']}?info=1", token=a.token)
        assert info.body["id"] == m["id"] and info.body["sha256"] == m["sha256"], info
        # info through a signed URL: the same expiry, never a renewed one
        exp = int(m["url"].split("exp=")[1].split("&")[0])
        st, body, hd = await get(h.session, srv.base_url + m["url"] + "&info=1")
        again = json.loads(body)
        assert st == 200 and again["url_expires"] == exp and f"exp={exp}&" in again["url"], again
    # HEAD: the length, no body
    async with h.session.head(srv.base_url + m["url"]) as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(cases[-1][0])
        assert await r.read() == b""
    await h.api.expect(401, "POST", "/api/v1/media", data=b"x")
    await h.api.expect(400, "POST", "/api/v1/media", token=a.token, data=b"")


async def check_media_dedup_and_digest(h, srv):
    a, b = await h.api.register_many(2, "dd")
    data = pdf() + os.urandom(1000)
    m1 = await upload(h.api, a, data, "one.pdf")
    n = len(blob_files(srv.media_dir))
    m2 = await upload(h.api, b, data, "two.pdf", sha=hashlib.sha256(data).hexdigest().upper())
    assert m1["id"] != m2["id"] and m1["sha256"] == m2["sha256"]
    assert len(blob_files(srv.media_dir)) == n, "identical content must be stored once"
    assert blob_files(srv.media_dir).count(m1["sha256"]) == 1
    r = await upload(h.api, a, data + b"x", "x.pdf", sha=hashlib.sha256(data).hexdigest(), status=400)
    assert r["error"]["code"] == "digest_mismatch", r
    r = await upload(h.api, a, data, "x.pdf", sha="nothex", status=400)
    assert r["error"]["code"] == "bad_request", r
    assert len(blob_files(srv.media_dir)) == n
    assert os.listdir(os.path.join(srv.media_dir, "tmp")) == [], "failed uploads leave no temp file"


async def check_media_limits(h, srv):
    a = await h.api.register("lim")
    big = png(40, 40)
    assert len(big) > 2000
    r = await upload(h.api, a, big, "big.png", "image/png", status=413)      # declared image
    assert r["error"]["code"] == "too_large", r
    r = await upload(h.api, a, big, "big.bin", "application/octet-stream", status=413)  # sniffed image
    assert r["error"]["code"] == "too_large", r
    r = await upload(h.api, a, wav(5000), "w.wav", "application/octet-stream", status=413)
    assert r["error"]["code"] == "too_large", r
    await upload(h.api, a, png(4, 4), "small.png", "image/png")
    # quota: 1 MiB per user
    await upload(h.api, a, os.urandom(600_000), "q1.bin")
    r = await upload(h.api, a, os.urandom(600_000), "q2.bin", status=413)
    assert r["error"]["code"] == "quota", r
    other = await h.api.register("lim")
    await upload(h.api, other, os.urandom(600_000), "q3.bin")       # a quota is per user
    # a head announcing too much is refused before any byte is read; so is
    # one that would go over the quota by its Content-Length: no `100
    # Continue`, no body taken (audit N3: the 413 came after it all)
    for length, expect, code in ((900000000, "", b'"too_large"'),
                                 (590000, "Expect: 100-continue\r\n", b'"quota"')):
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write((f"POST /api/v1/media?name=x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.token}\r\n"
                      f"Content-Length: {length}\r\n{expect}\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert code in await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
    await upload(h.api, a, os.urandom(300_000), "q4.bin")            # what fits still does


async def check_media_inert_serving(h, srv):
    a = await h.api.register("xss")
    html = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>\n"
    svg = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
           b"<script>alert(2)</script></svg>\n")
    script = b"#!/bin/sh\necho pwned\nrm -rf /\n"
    elf = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 300
    for data, name, declared in [(html, "cat.png", "image/png"),          # a lie
                                 (html, "page.html", "text/html"),
                                 (svg, "logo.svg", "image/svg+xml"),
                                 (script, "run.sh", "text/plain"),
                                 (elf, "a.out", "image/jpeg")]:
        m = await upload(h.api, a, data, name, declared)
        assert m["kind"] == "file", m
        if declared == "image/png":
            assert m["mime"] == "text/html", m                            # corrected from the bytes
        for url, hdr in [(f"{srv.base_url}/api/v1/media/{m['id']}", {"Authorization": f"Bearer {a.token}"}),
                         (srv.base_url + m["url"], {})]:
            st, body, hd = await get(h.session, url, hdr)
            assert st == 200 and body == data
            assert hd["Content-Type"] == "application/octet-stream", (name, hd)
            assert hd["Content-Disposition"].startswith("attachment;"), hd
            check_inert_headers(hd)
    # path-like and hostile names
    m = await upload(h.api, a, pdf(), "../../etc/passwd", "application/pdf")
    assert m["name"] == "passwd", m
    m = await upload(h.api, a, pdf(), 'C:\\x\\"evil\r\nSet-Cookie: a=b".pdf', "application/pdf")
    assert m["name"] == "evilSet-Cookie a=b.pdf", m
    st, body, hd = await get(h.session, srv.base_url + m["url"])
    assert "Set-Cookie" not in hd, hd
    assert hd["Content-Disposition"] == ("attachment; filename=\"evilSet-Cookie a=b.pdf\"; "
                                         "filename*=UTF-8''evilSet-Cookie%20a%3Db.pdf"), hd
    m = await upload(h.api, a, pdf(), "r\u00e9sum\u00e9.pdf", "application/pdf")
    assert m["name"] == "r\u00e9sum\u00e9.pdf", m
    st, body, hd = await get(h.session, srv.base_url + m["url"])
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.pdf" in hd["Content-Disposition"], hd


async def check_media_ranges(h, srv):
    a = await h.api.register("rng")
    data = os.urandom(200_000)
    m = await upload(h.api, a, data, "r.bin")
    url = srv.base_url + m["url"]
    st, body, hd = await get(h.session, url, {"Range": "bytes=0-99"})        # first bytes
    assert st == 206 and body == data[:100] and hd["Content-Range"] == "bytes 0-99/200000", hd
    st, body, hd = await get(h.session, url, [("Range", "bytes=0-1"), ("Range", "bytes=5-6")])
    assert st == 200 and body == data and "Content-Range" not in hd, hd      # twice: ignored
    st, body, hd = await get(h.session, url, {"Range": "bytes=100000-150000"})  # middle
    assert st == 206 and body == data[100000:150001], st
    st, body, hd = await get(h.session, url, {"Range": "bytes=-500"})        # suffix
    assert st == 206 and body == data[-500:] and hd["Content-Range"] == "bytes 199500-199999/200000"
    st, body, hd = await get(h.session, url, {"Range": "bytes=199990-"})     # open end
    assert st == 206 and body == data[199990:]
    st, body, hd = await get(h.session, url, {"Range": "bytes=0-9,1000-1009,-5"})   # several
    assert st == 206, st
    ct = hd["Content-Type"]
    assert ct.startswith("multipart/byteranges; boundary="), hd
    boundary = ct.split("boundary=")[1].encode()
    parts = [p for p in body.split(b"--" + boundary) if p.strip(b"\r\n") not in (b"", b"--")]
    assert len(parts) == 3, body[:400]
    want = [(0, 9), (1000, 1009), (199995, 199999)]
    for p, (f, l) in zip(parts, want):
        head, _, payload = p.partition(b"\r\n\r\n")
        assert f"Content-Range: bytes {f}-{l}/200000".encode() in head, head
        assert payload[:l - f + 1] == data[f:l + 1]
    assert int(hd["Content-Length"]) == len(body)
    st, body, hd = await get(h.session, url, {"Range": "bytes=300000-"})     # past the end
    assert st == 416 and hd["Content-Range"] == "bytes */200000", (st, hd)
    st, body, hd = await get(h.session, url, {"Range": "bytes=" + ",".join(f"{i}-{i}" for i in range(20))})
    assert st == 416, st                                                    # too many: a clear 416
    st, body, hd = await get(h.session, url, {"Range": "bytes=junk"})        # malformed: ignored
    assert st == 200 and body == data
    st, body, hd = await get(h.session, url, {"If-None-Match": f"\"{m['sha256']}\""})
    assert st == 304 and body == b"", st
    # several downloads at once on one server, each whole
    res = await asyncio.gather(*[get(h.session, url) for _ in range(4)])
    assert all(r[0] == 200 and r[1] == data for r in res)


async def one_file_two_urls(h, srv, prefix, size):
    """A new user's upload of size random bytes: (data, its strong ETag,
    [(url, headers)] for the signed URL and the token URL)."""
    a = await h.api.register(prefix)
    data = os.urandom(size)
    m = await upload(h.api, a, data, prefix + ".bin")
    return data, f"\"{m['sha256']}\"", [(srv.base_url + m["url"], {}),
                                         (srv.base_url + f"/api/v1/media/{m['id']}",
                                          {"Authorization": f"Bearer {a.token}"})]


async def check_media_if_range(h, srv):
    """RFC 9110 13.1.5: a Range with an If-Range that does not match the
    file's current validator is ignored (200, all of it); only the strong
    ETag matches (downloads send no Last-Modified, so no date does). Before,
    every If-Range got the range."""
    data, etag, urls = await one_file_two_urls(h, srv, "ifr", 50_000)
    for url, auth in urls:
        st, body, hd = await get(h.session, url, {**auth, "Range": "bytes=0-99", "If-Range": etag})
        assert st == 206 and body == data[:100] and hd["Content-Range"] == "bytes 0-99/50000", (url, st, hd)
        st, body, hd = await get(h.session, url, {**auth, "Range": "bytes=0-9,-5", "If-Range": etag})
        assert st == 206 and hd["Content-Type"].startswith("multipart/byteranges"), (url, st, hd)
        for stale in ("W/" + etag, "\"0123\"", f"\"{'0' * 64}\"", "*", f"{etag}, \"x\"",
                      "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 01 Jan 2100 00:00:00 GMT"):
            st, body, hd = await get(h.session, url, {**auth, "Range": "bytes=0-99", "If-Range": stale})
            assert st == 200 and body == data and "Content-Range" not in hd, (url, stale, st, hd)
            assert hd["ETag"] == etag, hd
        # ignored with the Range it guards: an unsatisfiable one is not 416 then
        st, body, hd = await get(h.session, url, {**auth, "Range": "bytes=90000-", "If-Range": "W/" + etag})
        assert st == 200 and body == data, (url, st)
        st, body, hd = await get(h.session, url, {**auth, "Range": "bytes=90000-", "If-Range": etag})
        assert st == 416, (url, st)
        # without a Range, If-Range changes nothing
        st, body, hd = await get(h.session, url, {**auth, "If-Range": "W/" + etag})
        assert st == 200 and body == data, (url, st)


async def check_media_head_ignores_range(h, srv):
    """RFC 9110 14.2: Range is defined for GET only, so a HEAD with one
    answers what a GET without it would: 200, the whole Content-Length, no
    Content-Range (before, 206 or 416)."""
    data, etag, urls = await one_file_two_urls(h, srv, "hdr", 30_000)
    for url, auth in urls:
        for rng in ("bytes=0-99", "bytes=0-9,-5", "bytes=90000-", "bytes=" + ",".join(f"{i}-{i}" for i in range(20))):
            for extra in ({}, {"If-Range": etag}):
                async with h.session.head(url, headers={**auth, "Range": rng, **extra}) as r:
                    assert r.status == 200, (url, rng, extra, r.status, r.headers)
                    assert int(r.headers["Content-Length"]) == len(data), (url, rng, r.headers)
                    assert "Content-Range" not in r.headers, (url, rng, r.headers)
                    assert not r.headers.get("Content-Type", "").startswith("multipart/"), r.headers
                    assert r.headers["ETag"] == etag and r.headers["Accept-Ranges"] == "bytes", r.headers
                    assert await r.read() == b""
        # the same Range on a GET still applies
        st, body, hd = await get(h.session, url, {**auth, "Range": "bytes=0-99"})
        assert st == 206 and body == data[:100], (url, st)
        # If-None-Match on a HEAD is still a 304
        async with h.session.head(url, headers={**auth, "If-None-Match": etag, "Range": "bytes=0-9"}) as r:
            assert r.status == 304, (url, r.status)


async def check_media_download_methods(h, srv):
    """A download URL answers GET and HEAD only: another method is 405 with
    Allow: GET, HEAD (before, the signed URL answered 404, as if it named
    nothing); a path beside it that names nothing stays 404."""
    a = await h.api.register("dlm")
    m = await upload(h.api, a, os.urandom(1000), "m.bin")
    for url in (srv.base_url + m["url"], srv.base_url + f"/api/v1/media/{m['id']}"):
        auth = {} if "/api/" not in url else {"Authorization": f"Bearer {a.token}"}
        for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            async with h.session.request(method, url, headers=auth, data=b"",
                                         timeout=aiohttp.ClientTimeout(total=30)) as r:
                body = await r.read()
                assert r.status == 405, (method, url, r.status, body)
                allow = sorted(x.strip() for x in r.headers.get("Allow", "").split(","))
                assert allow == ["GET", "HEAD"], (method, url, r.headers)
                assert json.loads(body)["error"]["code"] == "method_not_allowed", body
    for path in ("/media", f"/media/{m['id']}/x", f"/media/{m['id']}/"):
        for method in ("GET", "POST", "DELETE"):
            async with h.session.request(method, srv.base_url + path, data=b"") as r:
                assert r.status == 404, (method, path, r.status)


async def check_media_access(h, srv):
    a, b = await h.api.register_many(2, "acc")
    m = await upload(h.api, a, pdf(), "secret.pdf")
    url = srv.base_url + m["url"]
    q = urllib.parse.parse_qs(urllib.parse.urlparse(m["url"]).query)
    exp, sig = q["exp"][0], q["sig"][0]
    st, _, _ = await get(h.session, url)
    assert st == 200
    forged = sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")
    for bad in [f"/media/{m['id']}?exp={exp}&sig={forged}",
                f"/media/{m['id']}?exp={int(exp) + 3600}&sig={sig}",              # a longer life
                f"/media/{m['id'] + 1}?exp={exp}&sig={sig}",                       # another id
                f"/media/{m['id']}?exp={exp}", f"/media/{m['id']}"]:
        st, body, _ = await get(h.session, srv.base_url + bad)
        assert st == 403, (bad, st, body)
    # another user: no access by bearer token, whoever knows the id
    st, _, _ = await get(h.session, f"{srv.base_url}/api/v1/media/{m['id']}",
                         {"Authorization": f"Bearer {b.token}"})
    assert st == 404
    r = await h.api.req("GET", f"/api/v1/media/{m['id']}?info=1", token=b.token)
    assert r.status == 404, r
    st, _, _ = await get(h.session, f"{srv.base_url}/api/v1/media/{m['id']}")
    assert st == 401
    # expiry: the URL lived at most ttl + one step (1 s each)
    deadline = time.time() + 10
    while time.time() < deadline:
        st, body, _ = await get(h.session, url)
        if st == 403:
            break
        await asyncio.sleep(0.5)
    assert st == 403 and b"expired" in body, (st, body)


async def raw_request(srv, head, body, drop_after=None):
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    writer.write(head.encode() + (body if drop_after is None else body[:drop_after]))
    await writer.drain()
    if drop_after is not None:
        await asyncio.sleep(0.3)
        writer.transport.abort()
        return None
    resp = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return resp


async def check_media_pipelined(h, srv):
    """A request pipelined right behind an upload's body (same packet) is
    answered after the upload, on the same connection."""
    a = await h.api.register("pipe")
    data = pdf() + os.urandom(300_000)
    head = (f"POST /api/v1/media?name=p.pdf HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.token}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    tail = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 8000 + b"\r\n\r\n"
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    writer.write(head + data + tail)
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert first.startswith(b"HTTP/1.1 201"), first
    n = int(re.search(rb"content-length: *(\d+)", first, re.I).group(1))
    body = await asyncio.wait_for(reader.readexactly(n), 10)
    assert b'"sha256":"' + hashlib.sha256(data).hexdigest().encode() in body
    second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert second.startswith(b"HTTP/1.1 200"), second
    writer.close()


async def check_media_resumable(h, srv):
    a = await h.api.register("res")
    data = os.urandom(500_000)
    r = await h.api.expect(201, "POST", "/api/v1/media/uploads?" + urllib.parse.urlencode(
        {"length": len(data), "name": "big.bin", "sha256": hashlib.sha256(data).hexdigest()}), token=a.token)
    uid = r.body["upload_id"]
    assert r.body["offset"] == 0 and hdr(r, "Location") == f"/api/v1/media/uploads/{uid}"
    path = f"/api/v1/media/uploads/{uid}"
    # the first PATCH carries everything but drops after 200 kB
    head = (f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.token}\r\n"
            f"Upload-Offset: 0\r\nContent-Length: {len(data)}\r\n\r\n")
    await raw_request(srv, head, data, drop_after=200_000)
    off = None
    for _ in range(50):                  # the server notices the drop, keeps what it wrote
        r = await h.api.req("HEAD", path, token=a.token)
        assert r.status == 204, r
        off = int(hdr(r, "Upload-Offset"))
        if off > 0:
            break
        await asyncio.sleep(0.1)
    assert 0 < off <= 200_000, off
    assert hdr(r, "Upload-Length") == str(len(data))
    # a PATCH at the wrong offset is refused with where it stands
    r = await patch_when_free(h, a.token, path, b"xx", 1)
    assert r.status == 409 and r.body["error"]["code"] == "offset_mismatch" and r.body["error"]["offset"] == off
    # an offset that is not digits is refused, not read as 0 (audit E: "abc"
    # stored the bytes at 0 when the upload stood there)
    for bad in ("abc", "", "-1", "0x0", "1e0", "0, 5", "99999999999999999999"):
        r = await h.api.req("PATCH", path, token=a.token, data=b"zz",
                            headers={"Upload-Offset": bad, "Content-Type": "application/octet-stream"})
        assert r.status == 400 and r.body["error"]["code"] == "bad_request", (bad, r)
        assert "Upload-Offset" in r.body["error"]["message"] and "required" not in r.body["error"]["message"], r
    # given twice, even once right: refused (audit N3: the first one counted)
    resp = await raw_request(srv, (f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.token}\r\n"
                                   f"Upload-Offset: {off}\r\nUpload-Offset: {off + 5}\r\nContent-Length: 2\r\n"
                                   f"Connection: close\r\n\r\n"), b"zz")
    assert resp.startswith(b"HTTP/1.1 400") and b"given twice" in resp, resp
    r = await h.api.req("HEAD", path, token=a.token)
    assert int(hdr(r, "Upload-Offset")) == off, "a refused PATCH changed the upload"
    # a middle part, then the rest
    mid = off + 100_000
    r = await h.api.req("PATCH", path, token=a.token, data=data[off:mid],
                        headers={"Upload-Offset": str(off), "Content-Type": "application/octet-stream"})
    assert r.status == 204 and hdr(r, "Upload-Offset") == str(mid), r
    r = await h.api.req("PATCH", path, token=a.token, data=data[mid:],
                        headers={"Upload-Offset": str(mid), "Content-Type": "application/octet-stream"})
    assert r.status == 201, r
    m = r.body
    assert m["size"] == len(data) and m["sha256"] == hashlib.sha256(data).hexdigest()
    st, body, _ = await get(h.session, srv.base_url + m["url"])
    assert st == 200 and body == data
    r = await h.api.req("HEAD", path, token=a.token)
    assert r.status == 404                                            # done: the session is gone
    # someone else's upload is not found
    b = await h.api.register("res")
    r = await h.api.expect(201, "POST", "/api/v1/media/uploads?length=10", token=a.token)
    r2 = await h.api.req("PATCH", f"/api/v1/media/uploads/{r.body['upload_id']}", token=b.token,
                         data=b"0123456789", headers={"Upload-Offset": "0"})
    assert r2.status == 404, r2
    r2 = await h.api.req("PATCH", f"/api/v1/media/uploads/{r.body['upload_id']}", token=a.token,
                         data=b"0123456789abc", headers={"Upload-Offset": "0"})
    assert r2.status == 413, r2


async def patch_when_free(h, token, path, data, offset):
    """A PATCH, sent again while it is refused with 409 conflict: a PATCH
    whose connection dropped holds the upload until the server notices
    (at once on a local socket; through HAProxy a moment later). Bounded:
    an upload that stays held is the last answer."""
    deadline = time.time() + 10
    while True:
        r = await h.api.req("PATCH", path, token=token, data=data,
                            headers={"Upload-Offset": str(offset), "Content-Type": "application/octet-stream"})
        if r.status != 409 or r.code != "conflict" or time.time() > deadline:
            return r
        await asyncio.sleep(0.1)


async def upload_offset(h, token, path, want=None):
    """Where a resumable upload stands (HEAD); with want, waits (bounded)
    until it stands there."""
    deadline = time.time() + 10
    while True:
        r = await h.api.req("HEAD", path, token=token)
        assert r.status == 204, r
        off = int(hdr(r, "Upload-Offset"))
        if want is None or off == want or time.time() > deadline:
            return off
        await asyncio.sleep(0.05)


async def read_response(reader, timeout=30):
    """One response off a raw connection: status, headers (names
    lower-cased), body (by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(n), timeout) if n else b""
    return status, headers, body


async def check_media_patch_one_at_a_time(h, srv):
    """One PATCH at a time per upload (docs/protocol.md "Resumable uploads"):
    a second PATCH while the first is mid-body is 409 conflict and writes
    nothing (in cluster mode the two may reach different nodes); the first
    goes on; once it ends, answered or dropped, the next is taken."""
    a = await h.api.register("lock")
    data = os.urandom(1024)
    r = await h.api.expect(201, "POST", "/api/v1/media/uploads?" + urllib.parse.urlencode(
        {"length": len(data), "name": "lock.bin", "sha256": hashlib.sha256(data).hexdigest()}), token=a.token)
    path = f"/api/v1/media/uploads/{r.body['upload_id']}"

    def patch_head(offset, length):
        return (f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.token}\r\n"
                f"Upload-Offset: {offset}\r\nContent-Length: {length}\r\n\r\n").encode()

    # the first PATCH announces 500 bytes, sends 200 and pauses
    r1, w1 = await asyncio.open_connection(srv.host, srv.port)
    w1.write(patch_head(0, 500) + data[:200])
    await w1.drain()
    assert await upload_offset(h, a.token, path, 200) == 200
    # meanwhile a second, at where the upload stands: refused, nothing written
    r2, w2 = await asyncio.open_connection(srv.host, srv.port)
    w2.write(patch_head(200, 100) + data[200:300])
    await w2.drain()
    st, hs, body = await read_response(r2)
    w2.close()
    assert st == 409 and json.loads(body)["error"]["code"] == "conflict", (st, hs, body)
    assert await upload_offset(h, a.token, path) == 200
    # the first goes on and ends where it said
    w1.write(data[200:500])
    await w1.drain()
    st, hs, body = await read_response(r1)
    w1.close()
    assert st == 204 and hs.get("upload-offset") == "500", (st, hs, body)
    assert await upload_offset(h, a.token, path) == 500
    # the upload takes the next PATCH: the rest
    r = await patch_when_free(h, a.token, path, data[500:], 500)
    assert r.status == 201, r
    assert r.body["size"] == len(data) and r.body["sha256"] == hashlib.sha256(data).hexdigest(), r
    st, got, _ = await get(h.session, srv.base_url + r.body["url"])
    assert st == 200 and got == data

    # a first PATCH whose connection drops mid-body frees the upload too
    data = os.urandom(1000)
    r = await h.api.expect(201, "POST", "/api/v1/media/uploads?" + urllib.parse.urlencode(
        {"length": len(data), "name": "drop.bin"}), token=a.token)
    path = f"/api/v1/media/uploads/{r.body['upload_id']}"
    r1, w1 = await asyncio.open_connection(srv.host, srv.port)
    w1.write(patch_head(0, len(data)) + data[:300])
    await w1.drain()
    assert await upload_offset(h, a.token, path, 300) == 300
    w1.transport.abort()
    off = await upload_offset(h, a.token, path)
    assert off == 300, off
    r = await patch_when_free(h, a.token, path, data[off:600], off)
    assert r.status == 204 and hdr(r, "Upload-Offset") == "600", r
    r = await patch_when_free(h, a.token, path, data[600:], 600)
    assert r.status == 201 and r.body["size"] == len(data), r
    st, got, _ = await get(h.session, srv.base_url + r.body["url"])
    assert st == 200 and got == data


async def check_media_gc(h, srv):
    a = await h.api.register("gc")
    data = pdf() + os.urandom(100)
    m = await upload(h.api, a, data, "gone.pdf")
    assert m["sha256"] in blob_files(srv.media_dir)
    deadline = time.time() + 20
    while time.time() < deadline and m["sha256"] in blob_files(srv.media_dir):
        await asyncio.sleep(0.3)
    assert m["sha256"] not in blob_files(srv.media_dir), "an unreferenced upload must be collected"
    r = await h.api.req("GET", f"/api/v1/media/{m['id']}?info=1", token=a.token)
    assert r.status == 404, r


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def server_pids(srv):
    if hasattr(srv, "nodes"):
        return [n.proc.pid for n in srv.nodes]
    return [srv.proc.pid]


async def check_media_upload_memory_bounded(h, srv):
    a = await h.api.register("rss")
    await upload(h.api, a, os.urandom(2_000_000), "warm.bin")      # warm up the paths
    pids = server_pids(srv)
    before = {p: rss_kb(p) for p in pids}
    peak = dict(before)
    size = 100 * 1000 * 1000
    block = os.urandom(1 << 20)
    sha = hashlib.sha256()
    done = asyncio.Event()

    async def body():
        sent = 0
        while sent < size:
            n = min(len(block), size - sent)
            sha.update(block[:n])
            yield block[:n]
            sent += n

    async def sample():
        while not done.is_set():
            for p in pids:
                peak[p] = max(peak[p], rss_kb(p))
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample())
    try:
        async with h.session.post(f"{srv.base_url}/api/v1/media?name=huge.bin", data=body(),
                                  headers={"Authorization": f"Bearer {a.token}",
                                           "Content-Length": str(size),
                                           "Content-Type": "application/octet-stream"},
                                  timeout=aiohttp.ClientTimeout(total=240)) as r:
            status, m = r.status, await r.json()
    finally:
        done.set()
        await sampler
    assert status == 201, m
    assert m["size"] == size and m["sha256"] == sha.hexdigest(), m
    for p in pids:
        peak[p] = max(peak[p], rss_kb(p))
    growth = max(peak[p] - before[p] for p in pids)
    print(f"RSS growth during a 100 MB upload: {growth} kB (before: {before}, peak: {peak})")
    assert growth < 30_000, f"RSS grew by {growth} kB during a 100 MB upload"
    # and downloading it streams too
    st, _, hd = await get(h.session, srv.base_url + m["url"], {"Range": "bytes=-10"})
    assert st == 206


async def check_media_thumbnail(h, srv):
    a = await h.api.register("th")
    m = await upload(h.api, a, png(64, 48), "pic.png", "image/png")
    assert m["kind"] == "image"
    info = None
    deadline = time.time() + 30
    while time.time() < deadline:
        info = (await h.api.expect(200, "GET", f"/api/v1/media/{m['id']}?info=1", token=a.token)).body
        if "thumb_url" in info:
            break
        await asyncio.sleep(0.2)
    assert info.get("width") == 64 and info.get("height") == 48, info
    assert isinstance(info.get("placeholder"), str) and len(info["placeholder"]) >= 6, info
    st, body, hd = await get(h.session, srv.base_url + info["thumb_url"])
    assert st == 200 and hd["Content-Type"] in ("image/jpeg", "image/webp"), hd
    assert body[:2] == b"\xff\xd8" or body[8:12] == b"WEBP"
    check_inert_headers(hd)


def attachments_of(ev):
    return (ev.get("data") or {}).get("attachments")


async def check_media_attachments(h, srv):
    a, b, c = await h.api.register_many(3, "att")
    g = (await h.api.create_group(a, [b.id]))["id"]
    pic = await upload(h.api, a, png(32, 24), "pic.png", "image/png")
    doc = await upload(h.api, a, pdf() + os.urandom(64), "doc.pdf", "application/pdf")
    theirs = await upload(h.api, b, pdf() + os.urandom(64), "b.pdf", "application/pdf")
    wb = await h.ws(b)
    # REST: attachments alone, no text
    r = await h.api.expect(201, "POST", f"/api/v1/conversations/{g}/messages", token=a.token,
                           json_body={"client_msg_id": "m1", "attachments": [pic["id"], doc["id"]]})
    ev = r.body                                    # the acknowledgement: seq, id, ts
    live = await wb.wait_for(lambda m: m.get("type") == "event" and m.get("seq") == ev["seq"]
                             and m.get("conversation") == g, what="the message with attachments")
    att = attachments_of(live)
    assert live["body"] == "" and [x["id"] for x in att] == [pic["id"], doc["id"]], live
    assert att[0]["kind"] == "image" and att[0]["width"] == 32 and att[0]["height"] == 24, att
    assert att[0]["placeholder"] and att[0]["thumb_url"].endswith("&thumb=1"), att
    documented = {"id", "kind", "mime", "size", "name", "width", "height", "placeholder", "url", "thumb_url"}
    assert all(set(x) <= documented for x in att), att   # protocol.md "Attachments in messages"
    assert att[1]["kind"] == "file" and att[1]["name"] == "doc.pdf" and att[1]["size"] == doc["size"], att
    assert "thumb_url" not in att[1]
    # the member sees them on reads too, and may fetch them
    hist = await h.api.expect(200, "GET", f"/api/v1/conversations/{g}/messages", token=b.token)
    [msg] = [e for e in hist.body["events"] if e["seq"] == ev["seq"]]
    for x in attachments_of(msg):
        st, body, _ = await get(h.session, srv.base_url + x["url"])
        assert st == 200 and len(body) == x["size"]
        st, _, _ = await get(h.session, f"{srv.base_url}/api/v1/media/{x['id']}",
                             {"Authorization": f"Bearer {b.token}"})
        assert st == 200, "a member of a conversation where it was posted may fetch it"
        st, _, _ = await get(h.session, f"{srv.base_url}/api/v1/media/{x['id']}",
                             {"Authorization": f"Bearer {c.token}"})
        assert st == 404, "a non-member may not"
    st, body, _ = await get(h.session, srv.base_url + attachments_of(msg)[0]["thumb_url"])
    assert st == 200 and len(body) > 0
    # WebSocket send, with text; only one's own uploads; at most 10, no repeats
    wa = await h.ws(a)
    rep = await wa.request({"type": "send", "conversation": g, "client_msg_id": "m2", "body": "see",
                            "attachments": [doc["id"]]})
    assert rep["type"] == "sent", rep
    word = "zq" + os.urandom(4).hex()
    await h.api.expect(201, "POST", f"/api/v1/conversations/{g}/messages", token=a.token,
                       json_body={"client_msg_id": "m2b", "body": f"{word} plain"})
    rep2 = await wa.request({"type": "send", "conversation": g, "client_msg_id": "m2c",
                             "body": f"{word} with a file", "attachments": [doc["id"]]})
    assert rep2["type"] == "sent", rep2
    # search: has_media keeps only messages with attachments
    deadline = time.time() + 10
    while True:
        r = await h.api.expect(200, "GET", f"/api/v1/search?q={word}", token=b.token)
        if len(r.body["results"]) == 2 or time.time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert len(r.body["results"]) == 2, r
    r = await h.api.expect(200, "GET", f"/api/v1/search?q={word}&has_media=1", token=b.token)
    assert [x["seq"] for x in r.body["results"]] == [rep2["seq"]], r
    r = await h.api.req("GET", f"/api/v1/search?q={word}&has_media=maybe", token=b.token)
    assert r.status == 400, r
    rep = await wa.request({"type": "send", "conversation": g, "client_msg_id": "m3",
                            "attachments": [theirs["id"]]})
    assert rep["type"] == "error" and rep["code"] == "not_found", rep
    r = await h.api.req("POST", f"/api/v1/conversations/{g}/messages", token=a.token,
                        json_body={"client_msg_id": "m4", "attachments": [doc["id"], doc["id"]]})
    assert r.status == 400, r
    r = await h.api.req("POST", f"/api/v1/conversations/{g}/messages", token=a.token,
                        json_body={"client_msg_id": "m5", "attachments": list(range(1, 12))})
    assert r.status == 400, r
    r = await h.api.req("POST", f"/api/v1/conversations/{g}/messages", token=a.token,
                        json_body={"client_msg_id": "m6", "body": ""})
    assert r.status == 400, r                      # no text and nothing attached
    # an edit keeps the attachments
    await h.api.expect(200, "PATCH", f"/api/v1/conversations/{g}/messages/{ev['seq']}",
                       token=a.token, json_body={"body": "edited"})
    hist = await h.api.expect(200, "GET", f"/api/v1/conversations/{g}/messages", token=b.token)
    [msg] = [e for e in hist.body["events"] if e["seq"] == ev["seq"]]
    assert msg["body"] == "edited" and [x["id"] for x in attachments_of(msg)] == [pic["id"], doc["id"]], msg
    # attached media outlive the grace period (2 s; the collector runs every second) ...
    await asyncio.sleep(3.5)
    assert pic["sha256"] in blob_files(srv.media_dir)
    # ... until the last message referencing them is deleted
    await h.api.expect(200, "DELETE", f"/api/v1/conversations/{g}/messages/{ev['seq']}", token=a.token)
    deadline = time.time() + 20
    while time.time() < deadline and pic["sha256"] in blob_files(srv.media_dir):
        await asyncio.sleep(0.3)
    assert pic["sha256"] not in blob_files(srv.media_dir), "the last reference went: the blob is freed"
    st, _, _ = await get(h.session, f"{srv.base_url}/api/v1/media/{pic['id']}",
                         {"Authorization": f"Bearer {a.token}"})
    assert st == 404
    assert doc["sha256"] in blob_files(srv.media_dir), "doc is still attached to the second message"


# ---- the tests: one server per configuration, the checks above in turn ------


@async_test(timeout=240)
async def test_media_default_server(server_factory, media_dirs):
    """kinds, dedup and digest, inert serving, Range (and HEAD, 405s), resumable uploads (one PATCH at a time), thumbnails"""
    srv = media_server(server_factory, media_dirs)
    async with Harness(srv) as h:
        await check_media_kinds_roundtrip(h, srv)
        await check_media_dedup_and_digest(h, srv)
        await check_media_inert_serving(h, srv)
        await check_media_ranges(h, srv)
        await check_media_if_range(h, srv)
        await check_media_head_ignores_range(h, srv)
        await check_media_download_methods(h, srv)
        await check_media_resumable(h, srv)
        await check_media_patch_one_at_a_time(h, srv)
        await check_media_pipelined(h, srv)
        await check_media_thumbnail(h, srv)


@async_test(timeout=120)
async def test_media_limits(server_factory, media_dirs):
    srv = media_server(server_factory, media_dirs, "--media-max-image", "2000", "--media-max-audio", "3000",
                       "--media-quota-mb", "1")
    async with Harness(srv) as h:
        await check_media_limits(h, srv)


@async_test(timeout=120)
async def test_media_access(server_factory, media_dirs):
    srv = media_server(server_factory, media_dirs, "--media-url-ttl", "1")
    async with Harness(srv) as h:
        await check_media_access(h, srv)


@async_test(timeout=120)
async def test_a_signed_url_cannot_renew_itself(server_factory, media_dirs):
    """?info=1 on a signed URL answers URLs that expire with the one
    presented: holding a URL must not mean holding the file for ever (an
    audit renewed one past a removal and a delete)."""
    srv = media_server(server_factory, media_dirs, "--media-url-ttl", "6")
    async with Harness(srv) as h:
        a = await h.api.register("sr")
        m = await upload(h.api, a, pdf(), "doc.pdf")
        for attempt in range(2):
            info = (await h.api.expect(200, "GET", f"/api/v1/media/{m['id']}?info=1", token=a.token)).body
            exp = info["url_expires"]
            await asyncio.sleep(6.1)                   # a fresh URL now expires later than this one
            st, body, hd = await get(h.session, srv.base_url + info["url"] + "&info=1")
            if st == 403 and attempt == 0:             # it expired first (made just before a step): again
                continue
            break
        assert st == 200, (st, body)
        again = json.loads(body)
        assert again["url_expires"] == exp and f"exp={exp}&" in again["url"], (exp, again)
        # a parameter given twice is 400 here too (audit O3: the URL was served)
        fresh = (await h.api.expect(200, "GET", f"/api/v1/media/{m['id']}?info=1", token=a.token)).body["url"]
        st, body, hd = await get(h.session, srv.base_url + fresh)
        assert st == 200, (st, body)
        for extra in ("&info=1&info=0", "&exp=" + fresh.split("exp=")[1].split("&")[0]):
            st, body, hd = await get(h.session, srv.base_url + fresh + extra)
            assert st == 400 and b"more than once" in body, (extra, st, body)


@async_test(timeout=180)
async def test_media_attachments_and_gc(server_factory, media_dirs):
    srv = media_server(server_factory, media_dirs, "--media-gc-grace", "2")
    async with Harness(srv) as h:
        await check_media_gc(h, srv)
        await check_media_attachments(h, srv)


@async_test(timeout=300)
async def test_media_upload_memory_bounded(server_factory, media_dirs):
    srv = media_server(server_factory, media_dirs)
    async with Harness(srv) as h:
        await check_media_upload_memory_bounded(h, srv)



# ---- audit J2 (media, black box): each check failed before its fix -------------------


async def check_media_declared_scripts_not_kept(h, srv):
    """F1: a script or executable type the uploader declares is never kept
    when libmagic only says text/plain: it falls back to the sniffed type,
    as HTML, XML and JavaScript did; an inert precise type still is kept."""
    a = await h.api.register("scr")
    for declared in ("application/x-sh", "text/x-sh", "text/x-python", "application/x-python",
                     "text/x-perl", "application/x-php", "text/x-php", "application/x-httpd-php",
                     "application/x-bat", "application/hta", "application/x-tcl", "application/x-csh",
                     "application/x-msdownload", "text/vbscript", "application/x-anything"):
        m = await upload(h.api, a, b"just some words\n", "x", declared)
        assert m["mime"] == "text/plain" and m["kind"] == "file", (declared, m)
    m = await upload(h.api, a, b"a,b\n1,2\n", "t.csv", "text/csv")
    assert m["mime"] == "text/csv", m


async def check_media_uploads_in_progress_count(h, srv):
    """F2: an unfinished resumable upload holds its declared length against
    the quota (1 MiB here) from its creation; one user has at most 16 in
    progress."""
    a = await h.api.register("rq")
    uids = []
    for _ in range(2):                                   # 800,000 bytes reserved
        r = await h.api.expect(201, "POST", "/api/v1/media/uploads?length=400000", token=a.token)
        uids.append(r.body["upload_id"])
    r = await h.api.req("POST", "/api/v1/media/uploads?length=400000", token=a.token)
    assert r.status == 413 and r.code == "quota", r
    r = await upload(h.api, a, os.urandom(300_000), "big.bin", status=413)
    assert r["error"]["code"] == "quota", r
    await upload(h.api, a, os.urandom(200_000), "fits.bin")          # 1,000,000 in all
    data = os.urandom(400_000)                           # completing one converts its reservation
    r = await h.api.req("PATCH", f"/api/v1/media/uploads/{uids[0]}", token=a.token, data=data,
                        headers={"Upload-Offset": "0", "Content-Type": "application/octet-stream"})
    assert r.status == 201 and r.body["size"] == len(data), r
    r = await h.api.req("POST", "/api/v1/media/uploads?length=100000", token=a.token)
    assert r.status == 413 and r.code == "quota", r
    # at most 16 in progress
    b = await h.api.register("rq")
    made = []
    for _ in range(16):
        r = await h.api.expect(201, "POST", "/api/v1/media/uploads?length=10", token=b.token)
        made.append(r.body["upload_id"])
    r = await h.api.req("POST", "/api/v1/media/uploads?length=10", token=b.token)
    assert r.status == 413 and r.code == "quota" and "in progress" in r.body["error"]["message"], r
    r = await h.api.req("PATCH", f"/api/v1/media/uploads/{made[0]}", token=b.token, data=b"0123456789",
                        headers={"Upload-Offset": "0", "Content-Type": "application/octet-stream"})
    assert r.status == 201, r
    await h.api.expect(201, "POST", "/api/v1/media/uploads?length=10", token=b.token)


async def check_media_path_id_range(h, srv):
    """F3: a media id above 2^53 - 1 in the path is 400, as for conversations."""
    a = await h.api.register("pid")
    for path in ("/api/v1/media/9007199254740992", "/api/v1/media/99999999999999999999",
                 "/api/v1/media/9007199254740992?info=1"):
        r = await h.api.req("GET", path, token=a.token)
        assert r.status == 400 and r.code == "bad_request", (path, r)
    st, body, _ = await get(h.session, srv.base_url + "/media/9007199254740992?exp=1&sig=x")
    assert st == 400, (st, body)
    r = await h.api.req("GET", "/api/v1/media/9007199254740991", token=a.token)
    assert r.status == 404, r


async def check_media_name_rules(h, srv):
    """F4, F7.4: %00 in a name is dropped as every control character;
    invisible formatting characters (a U+202E that shows "gnp.exe" as
    "exe.png", zero-width ones) go, other spaces become plain ones, an
    emoji keeps its own."""
    a = await h.api.register("nm")
    for raw, want in [("nul\x00x.txt", "nulx.txt"),
                      ("\u202egnp.exe", "gnp.exe"),
                      ("a\u2066b\u2069\u200b.txt", "ab.txt"),
                      ("\ufeffa\u00a0b.txt", "a b.txt"),
                      ("\u00a0.hidden", "hidden"),
                      ("\u2764\ufe0f.txt", "\u2764\ufe0f.txt")]:
        m = await upload(h.api, a, b"hello\n", raw, "text/plain")
        assert m["name"] == want, (raw, m)


async def check_media_url_expiry_at_least_ttl(h, srv):
    """F5: url_expires is never less than now + --media-url-ttl (2 s here)."""
    a = await h.api.register("ttl")
    m = await upload(h.api, a, pdf(), "d.pdf")
    for _ in range(8):
        t0 = time.time()
        info = (await h.api.expect(200, "GET", f"/api/v1/media/{m['id']}?info=1", token=a.token)).body
        t1 = time.time()
        assert t0 + 2 <= info["url_expires"] <= t1 + 2 + 2 + 1, (t0, info["url_expires"])
        await asyncio.sleep(0.29)


async def check_media_flags(h, srv):
    """F6: ?info= and ?thumb= are booleans as search's: 1/true, 0/false,
    anything else 400; F7.5: a thumbnail is named with its own extension."""
    a = await h.api.register("flg")
    data = png(8, 6)
    m = await upload(h.api, a, data, "green.png", "image/png")
    assert "thumb_url" in m, m
    bearer = {"Authorization": f"Bearer {a.token}"}
    base = f"{srv.base_url}/api/v1/media/{m['id']}"
    for q in ("info=0", "info=false", "thumb=0", "thumb=false"):
        st, body, hd = await get(h.session, f"{base}?{q}", bearer)
        assert st == 200 and body == data, (q, st, hd)
    for q in ("info=1", "info=true"):
        st, body, hd = await get(h.session, f"{base}?{q}", bearer)
        assert st == 200 and json.loads(body)["id"] == m["id"], (q, st)
    for q in ("thumb=1", "thumb=true"):
        st, body, hd = await get(h.session, f"{base}?{q}", bearer)
        assert st == 200 and hd["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8", (q, st, hd)
        assert hd["Content-Disposition"] == ("inline; filename=\"green.jpg\"; filename*=UTF-8''green.jpg"), hd
    for q in ("info=", "info=yes", "thumb=", "thumb=2", "info=TRUE"):
        st, body, hd = await get(h.session, f"{base}?{q}", bearer)
        assert st == 400 and json.loads(body)["error"]["code"] == "bad_request", (q, st, body)
    st, body, hd = await get(h.session, srv.base_url + m["thumb_url"])
    assert st == 200 and "filename=\"green.jpg\"" in hd["Content-Disposition"], hd


async def check_media_resumable_edges(h, srv):
    """F7.1-F7.3: a completing PATCH refused (413 here) discards the upload
    (404 after); Upload-Offset is written as every integer (no leading
    zero); a PATCH without Content-Length is 411 as every body."""
    a = await h.api.register("edg")
    big = png(40, 40)                                    # over --media-max-image 2000
    r = await h.api.expect(201, "POST", f"/api/v1/media/uploads?length={len(big)}", token=a.token)
    path = f"/api/v1/media/uploads/{r.body['upload_id']}"
    r = await h.api.req("PATCH", path, token=a.token, data=big,
                        headers={"Upload-Offset": "00", "Content-Type": "application/octet-stream"})
    assert r.status == 400 and r.code == "bad_request", r
    head = (f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.token}\r\n"
            f"Upload-Offset: 0\r\nConnection: close\r\n\r\n")
    resp = await raw_request(srv, head, b"")
    assert resp.startswith(b"HTTP/1.1 411") and b"length_required" in resp, resp[:300]
    r = await h.api.req("PATCH", path, token=a.token, data=big,
                        headers={"Upload-Offset": "0", "Content-Type": "application/octet-stream"})
    assert r.status == 413 and r.code == "too_large", r
    r = await h.api.req("HEAD", path, token=a.token)
    assert r.status == 404, r


@async_test(timeout=180)
async def test_media_audit_j2(server_factory, media_dirs):
    """script types, uploads in progress and the quota, path id range, names,
    URL expiry, info/thumb booleans and the thumbnail's name, resumable edges"""
    srv = media_server(server_factory, media_dirs, "--media-quota-mb", "1", "--media-url-ttl", "2",
                       "--media-max-image", "2000", "--media-max-file", "700000")
    async with Harness(srv) as h:
        await check_media_declared_scripts_not_kept(h, srv)
        await check_media_uploads_in_progress_count(h, srv)
        await check_media_path_id_range(h, srv)
        await check_media_name_rules(h, srv)
        await check_media_url_expiry_at_least_ttl(h, srv)
        await check_media_flags(h, srv)
        await check_media_resumable_edges(h, srv)


@pytest.mark.cluster_only("two nodes checking one user's quota at the same moment")
@async_test(timeout=120)
async def test_media_quota_holds_for_uploads_finishing_together_on_two_nodes(server_factory, media_dirs):
    """Two uploads of one user that together go over the quota, their last
    bytes sent to two nodes at the same moment: one is refused (413 quota).
    Both were taken: the quota sum's snapshot was older than the lock it
    waited for, so it missed the row the other node had just committed
    (audit P2 F1)."""
    srv = media_server(server_factory, media_dirs, "--media-quota-mb", "2")
    n = int(1.2 * (1 << 20))
    async with Harness(srv) as h:
        for attempt in range(3):
            a = await h.api.register("qr")
            conns = []
            for i, node in enumerate(srv.nodes[:2]):
                reader, writer = await asyncio.open_connection(node.host, node.port)
                writer.write((f"POST /api/v1/media?name=c{i}.pdf&type=application/pdf HTTP/1.1\r\nHost: x\r\n"
                              f"Authorization: Bearer {a.token}\r\nContent-Length: {n}\r\n"
                              "Connection: close\r\n\r\n").encode())
                body = pdf() + os.urandom(n - len(pdf()))
                writer.write(body[:-10])
                await writer.drain()
                conns.append((reader, writer, body[-10:]))
            await asyncio.sleep(0.5)
            for _, writer, tail in conns:
                writer.write(tail)
            answers = []
            for reader, writer, _ in conns:
                await writer.drain()
                answers.append((await asyncio.wait_for(reader.read(), 30)).split(b"\r\n", 1)[0])
                writer.close()
            assert sorted(a[:12] for a in answers) == [b"HTTP/1.1 201", b"HTTP/1.1 413"], \
                (attempt, answers)
