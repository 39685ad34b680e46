"""Media when the server runs out of room (docs/protocol.md "Media", audit
E4 F2-F4): the disk reserve uploads keep for the store, dropping a
resumable upload in progress, and storage that cannot be reached now
answered `unavailable` (503, Retry-After) rather than `internal` or 404.

Written from the document; each failed before its fix:
  * --media-reserve: a plain upload, the creation of a resumable upload and
    a PATCH that would leave less than the reserve free on the media
    directory's disk are refused, 507 insufficient_storage, with nothing
    stored (no blob, no temp file, the PATCH's upload where it was, its
    Upload-Offset in the answer); a message is still sent; once the space
    is back the upload completes (test_media_reserve_keeps_the_disk_for_the_store);
  * DELETE /api/v1/media/uploads/{id}: the owner drops an upload in
    progress (204; then GET/HEAD/PATCH/DELETE 404, its files and its
    quota reservation gone, the same bytes upload again); anyone else, an
    unknown or completed upload 404; 409 while a PATCH is under way
    (test_media_upload_delete);
  * out of file descriptors: downloads (bearer token, signed URL,
    thumbnail) and uploads answer 503 unavailable with Retry-After: 1 and a
    log line, not 404 or 500; they work again once descriptors are back
    (test_media_out_of_descriptors, embedded only: a process limit).

The reserve is set relative to the disk's free space now, and the space is
then taken by a file allocated on the same disk (fallocate: no bytes
written), so no mount is needed; the margins (hundreds of MiB) absorb what
other processes write meanwhile.
"""

import asyncio
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import urllib.parse

import pytest

from pclient import Harness, async_test, cmid
from parleyd_proc import Server, finish
from test_media import blob_files, hdr, media_dirs, media_server, png, upload  # noqa: F401 (a fixture)

MiB = 1 << 20


def logs(srv):
    return "".join(n.log_text() for n in getattr(srv, "nodes", [srv]))


def free_mib(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // MiB


def upload_files(d):
    """What the media dir holds for uploads in progress and plain uploads
    being written: uploads/ (data, .json, owners' markers) and tmp/."""
    out = []
    for sub in ("uploads", "tmp"):
        for root, dirs, files in os.walk(os.path.join(d, sub)):
            out += [os.path.relpath(os.path.join(root, f), d) for f in files]
    return sorted(out)


async def create(h, user, length, status=201, **q):
    r = await h.api.req("POST", "/api/v1/media/uploads?" + urllib.parse.urlencode(dict(length=length, **q)),
                        token=user.token)
    assert r.status == status, r
    return r


async def patch(h, user, path, data, offset):
    return await h.api.req("PATCH", path, token=user.token, data=data,
                           headers={"Upload-Offset": str(offset), "Content-Type": "application/octet-stream"})


@async_test(timeout=240)
async def test_media_reserve_keeps_the_disk_for_the_store(server_factory, media_dirs):
    d = tempfile.mkdtemp(prefix="parley-media-")
    media_dirs.append(d)
    reserve = free_mib(d) - 300                     # room for 300 MiB of uploads now
    if reserve <= 256:
        pytest.skip("the test needs about 3 GiB free on /tmp")
    srv = media_server(server_factory, media_dirs, "--media-reserve", str(reserve))
    d = srv.media_dir
    filler = os.path.join(d, ".filler")
    async with Harness(srv) as h:
        a = await h.api.register("full")
        b = await h.api.register("full")
        dm = (await h.api.open_dm(a, b.id))["id"]
        data = os.urandom(256 * 1024)
        m = await upload(h.api, a, data, "before.bin")          # under the reserve: taken
        r = await create(h, a, len(data), sha256=hashlib.sha256(data).hexdigest(), name="part.bin")
        path = f"/api/v1/media/uploads/{r.body['upload_id']}"
        r = await patch(h, a, path, data[:64 * 1024], 0)
        assert r.status == 204, r
        blobs, files = sorted(blob_files(d)), upload_files(d)
        # the disk fills (another writer): about 1.7 GiB below the reserve
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, 2000 * MiB)
        finally:
            os.close(fd)
        try:
            full = "the server's disk is too full to take this upload"
            r = await h.api.req("POST", "/api/v1/media?name=two.bin", token=a.token, data=os.urandom(32 * 1024),
                                headers={"Content-Type": "application/octet-stream"})
            assert r.status == 507 and r.code == "insufficient_storage", r
            assert r.body["error"]["message"] == full, r
            r = await create(h, a, 1000, status=507)
            assert r.code == "insufficient_storage", r
            r = await patch(h, a, path, data[64 * 1024:128 * 1024], 64 * 1024)
            assert r.status == 507 and r.code == "insufficient_storage", r
            assert hdr(r, "Upload-Offset") == str(64 * 1024), r
            r = await h.api.req("HEAD", path, token=a.token)
            assert r.status == 204 and hdr(r, "Upload-Offset") == str(64 * 1024), r
            assert sorted(blob_files(d)) == blobs and upload_files(d) == files, "a refused upload stored something"
            # the store's own writes go on
            r = await h.api.req("POST", f"/api/v1/conversations/{dm}/messages", token=b.token,
                                json_body={"client_msg_id": cmid(), "body": "still here"})
            assert r.status == 201, r
            st = await h.api.req("GET", f"/api/v1/media/{m['id']}", token=a.token)
            assert st.status == 200, st
        finally:
            os.unlink(filler)
        # the space is back: the upload goes on where it stood
        r = await patch(h, a, path, data[64 * 1024:], 64 * 1024)
        assert r.status == 201 and r.body["sha256"] == hashlib.sha256(data).hexdigest(), r
        text = logs(srv)
        lines = [json.loads(x) for x in text.splitlines() if x.startswith("{") and "too full" in x]
        assert lines and all(x["level"] == "warn" for x in lines), text[-3000:]
        assert "two.bin" not in text and "part.bin" not in text, "a file name in the log"


@async_test(timeout=240)
async def test_media_upload_delete(server_factory, media_dirs):
    srv = media_server(server_factory, media_dirs, "--media-quota-mb", "1")
    d = srv.media_dir
    async with Harness(srv) as h:
        a = await h.api.register("del")
        b = await h.api.register("del")
        data = os.urandom(700_000)
        sha = hashlib.sha256(data).hexdigest()
        r = await create(h, a, len(data), sha256=sha, name="drop.bin")
        uid = r.body["upload_id"]
        path = f"/api/v1/media/uploads/{uid}"
        assert (await patch(h, a, path, data[:300_000], 0)).status == 204
        # its reservation holds the quota: a second one does not fit
        r = await create(h, a, 700_000, status=413)
        assert r.code == "quota", r
        # only its owner may drop it; for anyone else it does not exist
        for who, p in ((b, path), (a, "/api/v1/media/uploads/" + "0" * 32), (a, "/api/v1/media/uploads/nope")):
            r = await h.api.req("DELETE", p, token=who.token)
            assert r.status == 404 and r.code == "not_found", (p, r)
        r = await h.api.req("HEAD", path, token=a.token)
        assert r.status == 204 and hdr(r, "Upload-Offset") == "300000", r
        # not while a PATCH is under way
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write((f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.token}\r\n"
                      f"Upload-Offset: 300000\r\nContent-Length: 1000\r\n\r\n").encode() + data[300_000:300_100])
        await writer.drain()
        deadline = time.time() + 10
        while True:
            r = await h.api.req("HEAD", path, token=a.token)
            if hdr(r, "Upload-Offset") == "300100" or time.time() > deadline:
                break
            await asyncio.sleep(0.05)
        r = await h.api.req("DELETE", path, token=a.token)
        assert r.status == 409 and r.code == "conflict", r
        writer.transport.abort()
        # the owner drops it: gone, files and reservation with it
        deadline = time.time() + 10
        while True:
            r = await h.api.req("DELETE", path, token=a.token)
            if r.status != 409 or time.time() > deadline:     # the dropped PATCH may hold it a moment
                break
            await asyncio.sleep(0.1)
        assert r.status == 204 and not r.text, r
        for method in ("HEAD", "GET", "DELETE"):
            r = await h.api.req(method, path, token=a.token)
            assert r.status == 404, (method, r)
        r = await patch(h, a, path, data[300_100:], 300_100)
        assert r.status == 404, r
        assert not [f for f in upload_files(d) if uid in f], upload_files(d)
        # the same bytes upload again (the quota has room again)
        r = await create(h, a, len(data), sha256=sha, name="drop.bin")
        path = f"/api/v1/media/uploads/{r.body['upload_id']}"
        r = await patch(h, a, path, data, 0)
        assert r.status == 201 and r.body["sha256"] == sha, r
        # a completed upload is no upload in progress
        r = await h.api.req("DELETE", path, token=a.token)
        assert r.status == 404, r
        r = await h.api.req("PUT", path, token=a.token, data=b"x")
        assert r.status == 405 and hdr(r, "Allow") == "GET, HEAD, DELETE, PATCH", r


class LimitedServer(Server):
    """parleyd under `prlimit --nofile=N`: a process short of descriptors."""

    def __init__(self, binary, workdir, extra_args, nofile):
        super().__init__(binary, workdir, extra_args)
        self.nofile = nofile

    def cmd(self):
        return ["prlimit", f"--nofile={self.nofile}", "--"] + super().cmd()


async def raw(reader, writer, head, body=b""):
    """One request on an open keep-alive connection: status, headers, body."""
    writer.write(head.encode() + body)
    await writer.drain()
    block = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    lines = block.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
    n = int(headers.get("content-length", "0"))
    return int(lines[0].split()[1]), headers, (await asyncio.wait_for(reader.readexactly(n), 30) if n else b"")


@pytest.mark.embedded_only("a descriptor limit on one process")
@async_test(timeout=180)
async def test_media_out_of_descriptors(parleyd_bin, mode, request):
    if not shutil.which("prlimit"):
        pytest.skip("prlimit (util-linux) is needed")
    srv = LimitedServer(parleyd_bin, tempfile.mkdtemp(prefix="parley-it-"), [], 96)
    try:
        srv.start()
        async with Harness(srv) as h:
            a = await h.api.register("fd")
            txt = await upload(h.api, a, b"hello, descriptors\n" * 100, "pre.txt")
            img = await upload(h.api, a, png(64, 64), "pre.png", "image/png")
            assert img.get("thumb_url"), img
            auth = f"Host: x\r\nAuthorization: Bearer {a.token}\r\n"
            gets = {"token": f"GET /api/v1/media/{txt['id']} HTTP/1.1\r\n{auth}\r\n",
                    "signed": f"GET {txt['url']} HTTP/1.1\r\nHost: x\r\n\r\n",
                    "thumb": f"GET /api/v1/media/{img['id']}?thumb=1 HTTP/1.1\r\n{auth}\r\n"}
            posts = {"plain": f"POST /api/v1/media?name=x.txt HTTP/1.1\r\n{auth}Content-Length: 5\r\n\r\n",
                     "resumable": f"POST /api/v1/media/uploads?length=100 HTTP/1.1\r\n{auth}Content-Length: 0\r\n\r\n"}
            conns = {}
            for k in list(gets) + list(posts):             # opened while descriptors are there
                conns[k] = await asyncio.open_connection(srv.host, srv.port)
            for k, head in gets.items():
                st, hs, body = await raw(*conns[k], head)
                assert st == 200, (k, st, body)
            # idle connections take every descriptor left
            idle = []
            for _ in range(120):
                idle.append(await asyncio.open_connection(srv.host, srv.port))
            await asyncio.sleep(1.0)
            try:
                for k, head in gets.items():
                    st, hs, body = await raw(*conns[k], head)
                    assert st == 503 and hs.get("retry-after") == "1", (k, st, hs, body)
                    assert json.loads(body)["error"]["code"] == "unavailable", (k, body)
                for k, head in posts.items():
                    st, hs, body = await raw(*conns[k], head, b"hello" if k == "plain" else b"")
                    assert st == 503 and hs.get("retry-after") == "1", (k, st, hs, body)
                    assert json.loads(body)["error"]["code"] == "unavailable", (k, body)
            finally:
                for _, w in idle:
                    w.close()
            await asyncio.sleep(1.0)
            st, hs, body = await raw(*conns["token"], gets["token"])
            assert st == 200, (st, body)
            for _, w in conns.values():
                w.close()
            m = await upload(h.api, a, b"after\n" * 10, "after.txt")
            assert m["size"] == 60
        text = srv.log_text()
        lines = [json.loads(x) for x in text.splitlines() if x.startswith("{") and "media:" in x]
        assert any(x.get("errno") == "EMFILE" and x.get("media") == txt["id"] for x in lines), text[-4000:]
        assert any(x.get("errno") == "EMFILE" and x.get("step") == "create" for x in lines), text[-4000:]
        assert not re.search(r"pre\.txt|x\.txt", text), "a file name in the log"
    finally:
        problems = finish([srv], request.node.name)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
