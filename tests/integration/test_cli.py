"""The `parley` command line (cli/, README "The `parley` command line"): every
command run as a subprocess against the real server, in embedded and cluster
mode, checked through what the server then holds (REST history, a WebSocket
of another user) rather than only through the CLI's own output.

The binary is $PARLEY_CLI, else build/asan/parley (ASan + UBSan: every run's
stderr is checked for sanitizer reports). Each user of a test has its own
session file in a temporary directory (PARLEY_SESSION); passwords come from
PARLEY_PASSWORD or stdin.

  * accounts: register, whoami, logout, login (password on stdin), the
    session file's mode and contents (test_account_session_file);
  * send by argv, stdin and --lines, seen in order by another user's
    WebSocket; --id twice is one message (test_send_modes_and_idempotency);
  * @username opens the DM; group create/add/remove/leave/members, the human
    history lines of member events (test_groups_and_members);
  * history's human format for every event kind, --json lines equal to the
    server's events, paging options (test_history_format_and_json);
  * tail: live --count, --last N without gap or repeat, resuming across a
    server restart (test_tail_*);
  * token refresh after the access token expired, also two processes at
    once (test_token_refresh);
  * usage errors, server refusals and an unreachable server, with their exit
    statuses (test_errors_and_exit_statuses);
  * read, search (test_read_marks_read, test_search);
  * workspaces and channels: workspace create/list/show/add/remove/leave,
    channels, channel create/join/leave, WS by id or name, a channel as
    WS/#name for send, history, tail, members, and their errors
    (test_workspaces_and_channels);
  * moderation: report (by id, @username, WS/#name; a repeat; refusals),
    reports of a conversation for its admin and of the whole server for a
    server admin (--admins), --all, --json, resolve (test_reports);
  * blocks: block and unblock by name (twice: "already", "not blocked"),
    blocks and --json, a send and a new DM refused with the server's
    "blocked" both ways, groups unaffected, sends again after unblocking
    (test_block_unblock_and_blocks);
  * data lifecycle: retention of a DM, a group, a channel and a workspace
    (who may set it, where it comes from, the `retention` event live and in
    history, units, the server's 400), legal hold by a server admin
    (test_retention_and_hold); export to a file and stdout past one page of
    /me/messages, delete-account's confirmation, wrong password, the
    forgotten session, what the other member then sees
    (test_export_and_delete_account);
  * audit K3: channel leave refuses a group or DM as join does, adding a
    current member says "already a member", an empty QUERY/TITLE/NAME is a
    usage error naming it, invisible format characters (bidi controls,
    U+2028/9, zero-width ...) shown as U+FFFD, --help agrees with README.
"""

import asyncio
import json
import os
import pathlib
import queue
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time

import pytest

from parleyd_proc import SANITIZER_MARKERS, free_port
from pclient import PASSWORD, Harness, async_test, unique_name

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TIMEOUT = 30                      # any one CLI run; a test may fail, never hang
LINE = re.compile(r"^(\d+)#(\d+) (\d\d:\d\d:\d\d) (.*)$")


@pytest.fixture(scope="session")
def cli_bin():
    b = os.environ.get("PARLEY_CLI") or os.path.join(REPO, "build", "asan", "parley")
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"parley binary not found at {b!r}: set $PARLEY_CLI or run "
                    f"`make build/asan/parley`", pytrace=False)
    return os.path.abspath(b)


# LeakSanitizer's check at exit is half of an ASan CLI run's time (~55 of
# ~95 ms here, against ~20 ms for a release build), and these tests run the
# CLI over a thousand times: each command (its words, e.g. `group create`)
# is checked for leaks the first time this process runs it to each exit
# status, and runs without the check after that (every run keeps ASan's
# and UBSan's other checks). `tail` (Bg) is always checked.
_LEAKS_CHECKED = set()


def _leak_check_once(args, expect):
    words = []
    for a in args:
        if not a.startswith("-"):
            if not re.fullmatch(r"[a-z][a-z-]*", a) or len(words) == 2:
                break
            words.append(a)
    key = (tuple(words), expect)
    if key in _LEAKS_CHECKED:
        return "detect_leaks=0"
    _LEAKS_CHECKED.add(key)
    return "detect_leaks=1"


def no_sanitizer_report(stderr, what):
    for m in SANITIZER_MARKERS:
        assert m not in stderr, f"{what}: sanitizer report in the CLI's stderr:\n{stderr}"


class Cli:
    """One user of the command line: a session file of its own."""

    def __init__(self, binary, server, workdir, name=None):
        self.binary = binary
        self.server = server
        self.name = name or unique_name("cli")
        self.dir = os.path.join(workdir, self.name)
        self.session = os.path.join(self.dir, "session.json")
        self.bgs = []

    def env(self, extra=None):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PARLEY_") and k != "XDG_CONFIG_HOME"}
        env.update(PARLEY_SESSION=self.session, PARLEY_SERVER=self.server.base_url,
                   PARLEY_PASSWORD=PASSWORD, ASAN_OPTIONS="detect_leaks=1",
                   UBSAN_OPTIONS="print_stacktrace=1", LC_ALL="C.UTF-8")
        for k, v in (extra or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def run(self, *args, input=None, expect=0, env=None, timeout=TIMEOUT):
        e = self.env(env)
        if "ASAN_OPTIONS" not in (env or {}):
            e["ASAN_OPTIONS"] = _leak_check_once(args, expect)
        p = subprocess.run([self.binary, *args], input=input, capture_output=True, env=e,
                           timeout=timeout, encoding="utf-8")
        no_sanitizer_report(p.stderr, f"parley {' '.join(args)}")
        if expect is not None:
            assert p.returncode == expect, (f"parley {' '.join(args)}: exit {p.returncode}, expected "
                                            f"{expect}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def out(self, *args, **kw):
        return self.run(*args, **kw).stdout

    def register(self):
        out = self.out("register", self.name)
        m = re.fullmatch(rf"registered {re.escape(self.name.lower())} \(user (\d+)\)\n", out)
        assert m, out
        self.id = int(m.group(1))
        return self

    def saved(self):
        with open(self.session) as f:
            return json.load(f)

    @property
    def token(self):
        return self.saved()["access_token"]

    def bg(self, *args, env=None):
        b = Bg([self.binary, *args], self.env(env))
        self.bgs.append(b)
        return b


class Bg:
    """A CLI process left running (tail): its stdout lines as they come."""

    def __init__(self, argv, env):
        self.argv = argv
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                  stdin=subprocess.DEVNULL, encoding="utf-8")
        self.lines = queue.Queue()
        self.err = []
        threading.Thread(target=self._pump, args=(self.p.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.p.stderr, self.err.append), daemon=True).start()

    @staticmethod
    def _pump(f, put):
        for line in f:
            put(line.rstrip("\n"))
        put(None)

    def line(self, timeout=20):
        try:
            ln = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.argv[1:]}: no line within {timeout}s; stderr: {self.err}")
        assert ln is not None, f"{self.argv[1:]}: ended (exit {self.p.wait()}); stderr: {self.err}"
        return ln

    def finish(self, timeout=20):
        """Waits for the exit; returns (status, the rest of stdout's lines)."""
        rc = self.p.wait(timeout=timeout)
        rest = []
        while True:
            ln = self.lines.get(timeout=5)
            if ln is None:
                break
            rest.append(ln)
        time.sleep(0.05)                       # the stderr pump's last lines
        no_sanitizer_report("\n".join(x for x in self.err if x), f"parley {self.argv[1:]}")
        return rc, rest

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=10)


@pytest.fixture
def workdir():
    """A directory of the test's own (not pytest's tmp_path: pytest keeps its
    three newest base directories and deletes older ones, also those a
    concurrent pytest session on the machine is still using)."""
    d = tempfile.mkdtemp(prefix="parley-cli-")
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cli(cli_bin, server, workdir):
    """cli() -> a new Cli user against `server` (not registered yet)."""
    made = []

    def make(name=None):
        c = Cli(cli_bin, server, str(workdir), name)
        made.append(c)
        return c

    yield make
    for c in made:
        for b in c.bgs:
            b.kill()


def parse_lines(out):
    """History/tail human lines as (conv, seq, text); continuation lines (a
    body's line breaks) are joined to their event."""
    evs = []
    for ln in out.splitlines():
        m = LINE.match(ln)
        if m:
            evs.append([int(m.group(1)), int(m.group(2)), m.group(4)])
        else:
            assert ln.startswith("   ") and evs, f"not an event line nor a continuation: {ln!r}"
            evs[-1][2] += "\n" + ln[3:]
    return [tuple(e) for e in evs]


async def history_of(h, user_token, conv):
    r = await h.api.req("GET", f"/api/v1/conversations/{conv}/messages?limit=200", token=user_token)
    assert r.status == 200, r
    return r.body["events"]


# --------------------------------------------------------------------------
# accounts


def test_account_session_file(cli):
    alice = cli()
    alice.register()
    assert alice.out("whoami") == f"{alice.name.lower()} (user {alice.id})\n"
    me = json.loads(alice.out("--json", "whoami"))
    assert me == {"id": alice.id, "username": alice.name.lower()}

    # the session file: 0600 in a 0700 directory, tokens and no password
    st = os.stat(alice.session)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    assert stat.S_IMODE(os.stat(alice.dir).st_mode) == 0o700
    s = alice.saved()
    assert s["server"] == alice.server.base_url
    assert s["user"] == {"id": alice.id, "username": alice.name.lower()}
    assert s["access_token"] and s["refresh_token"]
    with open(alice.session, "rb") as f:
        assert PASSWORD.encode() not in f.read()

    # logout: the file goes, and the next command says so
    assert alice.out("logout") == "logged out\n"
    assert not os.path.exists(alice.session)
    p = alice.run("whoami", expect=1)
    assert p.stdout == "" and "not logged in" in p.stderr and p.stderr.startswith("parley: whoami: "), p.stderr
    # logout revoked the login session: its access token is dead too
    assert alice.run("whoami", env={"PARLEY_TOKEN": s["access_token"]}, expect=1).stderr.startswith(
        "parley: whoami: 401 unauthorized")

    # login with the password on stdin (not a terminal: read as one line)
    p = alice.run("login", alice.name, input=PASSWORD + "\n", env={"PARLEY_PASSWORD": None})
    assert p.stdout == f"logged in as {alice.name.lower()} (user {alice.id})\n"
    assert alice.out("whoami") == f"{alice.name.lower()} (user {alice.id})\n"
    # a wrong password is the server's 401, and the session stays as it was
    before = alice.saved()
    p = alice.run("login", alice.name, env={"PARLEY_PASSWORD": "not the password"}, expect=1)
    assert p.stderr.startswith("parley: login: 401 unauthorized: "), p.stderr
    assert alice.saved() == before
    # --json: the answer without its tokens
    j = json.loads(alice.out("--json", "login", alice.name))
    assert j["user"] == {"id": alice.id, "username": alice.name.lower()} and "refresh_token" not in j
    # a taken name is 409 conflict, exit 1, and the session stays
    before = alice.saved()
    assert alice.run("register", alice.name, expect=1).stderr.startswith("parley: register: 409 conflict")
    assert alice.saved() == before


# --------------------------------------------------------------------------
# sending


@async_test(120)
async def test_send_modes_and_idempotency(server, cli):
    alice, bob = cli().register(), cli().register()
    async with Harness(server) as h:
        ws = await h.ws(bob.token, name="bob-ws")             # bob watches over a WebSocket
        conv = int(alice.out("dm", "@" + bob.name).strip())   # @username: the DM, opened
        assert int(bob.out("dm", alice.name).strip()) == conv  # the same pair, the same one

        acks = []
        acks += alice.out("send", str(conv), "hello", "there", " spaced").splitlines()
        acks += alice.out("send", "@" + bob.name, input="from stdin\nsecond line\n").splitlines()
        acks += alice.out("send", str(conv), "-", input="dash means stdin").splitlines()
        acks += alice.out("send", str(conv), "--lines", input="line one\n\nline two\r\n\nline three").splitlines()
        seqs = [int(re.fullmatch(rf"{conv}#(\d+)", a).group(1)) for a in acks]
        assert seqs == list(range(seqs[0], seqs[0] + 6)), acks
        bodies = ["hello there  spaced", "from stdin\nsecond line", "dash means stdin",
                  "line one", "line two", "line three"]
        await ws.wait_seq(conv, seqs[-1])
        got = [(e["seq"], e["body"], e["sender"]) for e in ws.conv_events(conv) if e["kind"] == "message"]
        assert got == [(s, b, alice.id) for s, b in zip(seqs, bodies)], got

        # --id: the same key twice is one message; the second says (duplicate)
        first = alice.out("send", str(conv), "--id", "cli-test-key-1", "only once")
        second = alice.out("send", str(conv), "--id=cli-test-key-1", "only once, again")
        n = seqs[-1] + 1
        assert first == f"{conv}#{n}\n" and second == f"{conv}#{n} (duplicate)\n", (first, second)
        ack = json.loads(alice.out("--json", "send", str(conv), "--id", "cli-test-key-1", "x"))
        assert ack["duplicate"] is True and ack["seq"] == n and ack["client_msg_id"] == "cli-test-key-1", ack
        events = await history_of(h, bob.token, conv)
        assert [e["seq"] for e in events if e.get("client_msg_id") == "cli-test-key-1"] == [n]
        assert events[-1]["seq"] == n and events[-1]["body"] == "only once"
        # generated keys are distinct
        cmids = [e["client_msg_id"] for e in events if e["kind"] == "message"]
        assert len(set(cmids)) == len(cmids)

        # --reply-to, and --json acks
        ack = json.loads(alice.out("--json", "send", str(conv), "--reply-to", str(seqs[0]), "a reply"))
        assert ack["seq"] == n + 1 and ack["duplicate"] is False
        await ws.wait_seq(conv, n + 1)
        assert ws.conv_events(conv)[-1]["data"]["reply_to"] == seqs[0]

        # refused: empty, a stray option, --id with --lines
        assert "empty" in alice.run("send", str(conv), input="\n", expect=2).stderr
        assert alice.run("send", str(conv), "--lines", "--id", "k", input="x\n", expect=2).stderr
        assert "unknown option --bogus" in alice.run("send", str(conv), "--bogus", expect=2).stderr
        p = alice.out("send", str(conv), "--", "--bogus", "-5")       # after --, text
        assert re.fullmatch(rf"{conv}#{n + 2}\n", p)
        await ws.wait_seq(conv, n + 2)
        assert ws.conv_events(conv)[-1]["body"] == "--bogus -5"

        # --lines stops at a line that is not UTF-8: the lines before it
        # were sent, and the error says so (audit X: it said "nothing sent")
        p = subprocess.run([alice.binary, "send", str(conv), "--lines"], input=b"kept\n\xff\xfe bad\nafter\n",
                           capture_output=True, env=alice.env(None), timeout=TIMEOUT)
        err = p.stderr.decode()
        assert p.returncode == 2 and "line 2 is not valid UTF-8 text: not sent, nor any line after it" in err, err
        assert p.stdout.decode() == f"{conv}#{n + 3}\n", p.stdout
        await ws.wait_seq(conv, n + 3)
        assert ws.conv_events(conv)[-1]["body"] == "kept"


# --------------------------------------------------------------------------
# groups


def test_groups_and_members(cli):
    alice, bob, carol = cli().register(), cli().register(), cli().register()
    a, b, c = alice.name.lower(), bob.name.lower(), carol.name.lower()
    g = int(alice.out("group", "create", "Ops team", bob.name).strip())
    assert alice.out("members", str(g)) == f"{alice.id} {a} admin\n{bob.id} {b} member\n"
    assert alice.out("group", "add", str(g), "@" + carol.name) == f"added {c} to {g}\n"
    # roles: an admin makes a member admin and back (the event in history)
    assert alice.out("group", "role", str(g), carol.name, "admin") == f"{c} is an admin of {g}\n"
    assert alice.out("group", "role", str(g), carol.name, "member") == f"{c} is a member of {g}\n"
    assert alice.run("group", "role", str(g), carol.name, "owner", expect=2).returncode == 2
    assert bob.run("group", "role", str(g), carol.name, "admin", expect=1).stderr.startswith(
        "parley: group role: 403 forbidden")
    # the log in the human format, names from the member list
    evs = parse_lines(alice.out("history", str(g)))
    assert [(x, s, t) for x, s, t in evs] == [(g, 1, f'* {a} created "Ops team"'), (g, 2, f"* {a} added {c}"),
                                              (g, 3, f"* {a} made {c} an admin"), (g, 4, f"* {a} made {c} a member")]
    # people search finds who shares a conversation
    assert f"{carol.id} {c}\n" in alice.out("users", c[:6])
    assert alice.out("group", "remove", str(g), bob.name) == f"removed {b} from {g}\n"
    ms = [json.loads(x) for x in alice.out("--json", "members", str(g)).splitlines()]
    assert ms == [{"id": alice.id, "username": a, "role": "admin"},
                  {"id": carol.id, "username": c, "role": "member"}]
    # bob is out: the server's 404, exit 1
    p = bob.run("members", str(g), expect=1)
    assert p.stderr == "parley: members: 404 not_found: no such conversation\n", p.stderr
    # carol may not add (admins only): 403
    assert carol.run("group", "add", str(g), bob.name, expect=1).stderr.startswith("parley: group add: 403 forbidden")
    assert carol.out("leave", str(g)) == f"left {g}\n"
    assert alice.out("members", str(g)) == f"{alice.id} {a} admin\n"
    # who is no longer a member has no name to show (the API looks users up
    # by name only): "user N"
    evs = parse_lines(alice.out("history", str(g), "--after", "4"))
    assert [(s, t) for _, s, t in evs] == [(5, f"* {a} removed user {bob.id}"), (6, f"* user {carol.id} left")]
    # unknown users and conversations
    assert alice.run("group", "add", str(g), "nobody_" + a[:10], expect=1).stderr.startswith(
        "parley: group add: 404 not_found")
    assert alice.run("dm", "@nobody_" + a[:10], expect=1).stderr.startswith("parley: dm: 404 not_found")
    assert alice.run("group", "create", expect=2).returncode == 2
    assert alice.run("group", "rename", str(g), expect=2).returncode == 2
    # the list: id, kind, name (the other member's for a DM), unread, last event
    dm = int(alice.out("dm", bob.name).strip())
    alice.out("send", str(dm), "hi bob")
    lines = alice.out("conversations").splitlines()
    assert f"{dm}  direct  @{b}  unread 0  {a}: hi bob" in lines, lines
    assert f'{g}  group   "Ops team"  unread 0  * user {carol.id} left' in lines, lines
    assert alice.out("ls") == alice.out("conversations")


# --------------------------------------------------------------------------
# workspaces and channels


def test_workspaces_and_channels(cli):
    alice, bob, carol = cli().register(), cli().register(), cli().register()
    a, b, c = alice.name.lower(), bob.name.lower(), carol.name.lower()
    ws = int(alice.out("workspace", "create", "Acme").strip())
    assert alice.out("workspaces") == f'{ws}  "Acme"  admin  members 1  channels 1\n'
    assert alice.out("workspace", "list") == alice.out("workspaces")
    big = json.loads(alice.out("--json", "workspace", "create", "Big Co"))
    assert big["name"] == "Big Co" and big["role"] == "admin" and big["members"][0]["id"] == alice.id, big
    # WS: an id, or a name of mine (any case); USER with or without @
    assert alice.out("workspace", "add", "Acme", bob.name) == f"added {b} to workspace {ws}\n"
    assert alice.out("workspace", "add", str(ws), "@" + carol.name) == f"added {c} to workspace {ws}\n"
    assert alice.out("workspace", "show", "acme") == (f"{alice.id} {a} admin\n{bob.id} {b} member\n"
                                                      f"{carol.id} {c} member\n")
    assert bob.run("workspace", "add", "Acme", "@" + alice.name, expect=1).stderr.startswith(
        "parley: workspace add: 403 forbidden")
    assert bob.run("workspace", "role", "Acme", carol.name, "admin", expect=1).stderr.startswith(
        "parley: workspace role: 403 forbidden")
    assert alice.out("workspace", "role", "Acme", carol.name, "admin") == f"{carol.name} is an admin of workspace {ws}\n"
    assert alice.out("workspace", "role", str(ws), "@" + carol.name, "member") == \
        f"{carol.name} is a member of workspace {ws}\n"

    # channels: create (public, private with a member), list, join by WS/#name
    r = int(alice.out("channel", "create", "Acme", "random").strip())
    sec = json.loads(alice.out("--json", "channel", "create", "Acme", "secret", carol.name, "--private"))
    assert sec["kind"] == "channel" and sec["private"] is True and sec["workspace"] == ws, sec
    assert alice.run("channel", "create", "Acme", "Random", expect=1).stderr.startswith(
        "parley: channel create: 400 bad_request")
    assert alice.run("channel", "create", "Acme", "random", expect=1).stderr.startswith(
        "parley: channel create: 409 conflict")
    gen = json.loads(alice.out("--json", "workspace", "show", "Acme"))["general"]
    lines = bob.out("channels", "Acme").splitlines()               # by name; the private one is unseen
    assert lines == [f"{gen}  #general  public   joined  members 3",
                     f"{r}  #random  public   -       members 1"], lines
    assert carol.out("channel", "list", str(ws)).splitlines()[1] == f"{r}  #random  public   -       members 1"
    assert f"{sec['id']}  #secret  private  joined  members 2" in carol.out("channels", "Acme")
    p = bob.run("channel", "join", "Acme/#secret", expect=1)
    assert p.stderr.startswith("parley: channel join: no channel #secret in workspace Acme"), p.stderr
    assert bob.out("channel", "join", "Acme/#random") == f"joined {r}\n"
    assert bob.out("send", "acme/random", "hello", "channel") == f"{r}#3\n"
    assert parse_lines(alice.out("history", f"{ws}/#random")) == [
        (r, 1, f"* {a} created #random"), (r, 2, f"* {b} joined"), (r, 3, f"{b}: hello channel")]
    assert parse_lines(bob.out("tail", "Acme/#random", "--last", "1", "--count", "1")) == [
        (r, 3, f"{b}: hello channel")]
    assert f"{r}  channel  Acme/#random  unread 1  {b}: hello channel" in alice.out("ls").splitlines()
    assert [json.loads(x)["joined"] for x in bob.out("--json", "channels", str(ws)).splitlines()] == [True, True]

    # leaving and removal: out of the workspace is out of its channels
    assert alice.out("channel", "leave", "Acme/#secret") == f"left {sec['id']}\n"
    assert "#secret" not in alice.out("channels", "Acme")
    assert alice.out("workspace", "remove", "Acme", bob.name) == f"removed {b} from workspace {ws}\n"
    assert alice.out("members", "Acme/#random") == f"{alice.id} {a} admin\n"
    assert bob.out("workspaces") == ""
    assert bob.run("channels", str(ws), expect=1).stderr == "parley: channels: 404 not_found: no such workspace\n"
    assert carol.out("workspace", "leave", "Acme") == f"left workspace {ws}\n"
    assert parse_lines(alice.out("history", "Acme/#general", "--limit", "1"))[0][2] == f"* user {carol.id} left"

    # a name that names none, or two, of my workspaces; malformed arguments
    p = alice.run("channels", "Nope", expect=1)
    assert p.stderr == 'parley: channels: you are in no workspace named "Nope" (parley workspaces lists yours)\n'
    other = int(alice.out("workspace", "create", "Acme").strip())
    p = alice.run("send", "Acme/#general", "x", expect=1)
    assert p.stderr == (f'parley: send: 2 of your workspaces are named "Acme" ({ws}, {other}): '
                        f"give its id\n"), p.stderr
    assert f"{r}  channel  {ws}/#random  " in alice.out("ls")      # the name no longer says which
    for args in (["workspace"], ["workspace", "rename", "Acme"], ["channel", "create", "Acme"],
                 ["channels"], ["send", "/#general", "x"], ["send", "Acme/#", "x"], ["workspace", "show"]):
        assert alice.run(*args, expect=2).stderr.startswith("parley: "), args
    help_text = alice.out("help")
    for word in ("workspaces", "workspace create", "workspace add", "channels WS", "channel create", "channel join"):
        assert word in help_text, word


# --------------------------------------------------------------------------
# history


@async_test(120)
async def test_history_format_and_json(server, cli):
    alice, bob = cli().register(), cli().register()
    a, b = alice.name.lower(), bob.name.lower()
    conv = int(alice.out("dm", bob.name).strip())
    alice.out("send", str(conv), "first")                                  # 2
    alice.out("send", str(conv), input="two\nlines\n")                     # 3
    bob.out("send", str(conv), "--reply-to", "2", "a reply")               # 4
    async with Harness(server) as h:
        api = h.api
        at, bt = alice.token, bob.token
        base = f"/api/v1/conversations/{conv}/messages"
        await api.expect(200, "PATCH", f"{base}/2", token=at, json_body={"body": "first, edited"})      # 5
        await api.expect(200, "POST", f"{base}/2/reactions", token=bt, json_body={"emoji": "👍"})     # 6
        await api.expect(200, "POST", f"{base}/2/reactions", token=bt,
                         json_body={"emoji": "👍", "op": "remove"})                                    # 7
        await api.expect(200, "PUT", f"/api/v1/conversations/{conv}/pins/2", token=at)                 # 8
        await api.expect(200, "DELETE", f"{base}/3", token=at)                                          # 9
        server_events = await history_of(h, at, conv)

    out = alice.out("history", str(conv))
    evs = parse_lines(out)
    assert [(c, s) for c, s, _ in evs] == [(conv, s) for s in range(1, 10)], out
    assert [t for _, _, t in evs] == [
        f"* {a} created a direct conversation",
        f"{a}: first, edited (edited)",
        f"{a}: (deleted)",
        f"{b}: [re #2] a reply",
        f"* {a} edited #2: first, edited",
        f"* {b} reacted 👍 to #2",
        f"* {b} removed 👍 from #2",
        f"* {a} pinned #2",
        f"* {a} deleted #3",
    ], out
    # local time of day from ts
    ts = server_events[1]["ts"] / 1000
    assert LINE.match(out.splitlines()[1]).group(3) == time.strftime("%H:%M:%S", time.localtime(ts))
    # a multi-line body keeps one event per line start
    alice.out("send", str(conv), input="x\ny")                               # 10
    last = alice.out("history", str(conv), "--limit", "1")
    assert last == f"{conv}#10 {LINE.match(last.splitlines()[0]).group(3)} {a}: x\n   y\n", last
    # --json: the server's event objects, one compact JSON per line
    lines = alice.out("--json", "history", str(conv)).splitlines()
    assert [json.loads(x) for x in lines[:9]] == server_events
    assert all(x == json.dumps(json.loads(x), separators=(",", ":"), ensure_ascii=False) for x in lines)
    # paging: --after, --before, --limit, a window
    seqs = lambda *args: [s for _, s, _ in parse_lines(alice.out("history", str(conv), *args))]  # noqa: E731
    assert seqs("--after", "7") == [8, 9, 10]
    assert seqs("--before", "4") == [1, 2, 3]
    assert seqs("--before", "9", "--limit", "2") == [7, 8]
    assert seqs("--after", "2", "--before", "6") == [3, 4, 5]
    assert seqs("--after", "0", "--limit", "3") == [1, 2, 3]
    assert seqs("--limit", "3") == [8, 9, 10]
    # refused
    assert alice.run("history", str(conv), "--limit", "x", expect=2).returncode == 2
    assert alice.run("history", expect=2).returncode == 2
    assert alice.run("history", "conv12", expect=2).returncode == 2


@async_test(120)
async def test_history_pages_past_one_request(server, cli):
    """More than one page (200 events) is paged by the CLI, in order."""
    alice, bob = cli().register(), cli().register()
    conv = int(alice.out("dm", bob.name).strip())
    alice.run("send", str(conv), "--lines", input="".join(f"m{i}\n" for i in range(230)))
    evs = parse_lines(alice.out("history", str(conv), "--limit", "231"))
    assert [s for _, s, _ in evs] == list(range(1, 232))
    evs = parse_lines(alice.out("history", str(conv), "--after", "1", "--limit", "300"))
    assert [t.split(": ")[1] for _, _, t in evs] == [f"m{i}" for i in range(230)]


# --------------------------------------------------------------------------
# tail


async def wait_online(ws, user_id):
    """The tail's stream is open: its session's presence reached ws."""
    await ws.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == user_id
                      and m.get("status") == "online", timeout=15, what=f"user {user_id} online")


@async_test(90)
async def test_tail_count_prints_what_arrives(server, cli):
    alice, bob = cli().register(), cli().register()
    conv = int(alice.out("dm", bob.name).strip())
    other = int(alice.out("group", "create", "other", bob.name).strip())
    async with Harness(server) as h:
        ws = await h.ws(alice.token, name="alice-ws")
        t = bob.bg("tail", str(conv), "--count", "3")
        await wait_online(ws, bob.id)
        for i in range(3):
            await ws.send_msg(other, f"elsewhere {i}")      # not the tailed conversation
            await ws.send_msg(conv, f"m{i}")
        rc, rest = await asyncio.to_thread(t.finish)
    assert rc == 0, (rc, rest, t.err)
    evs = parse_lines("\n".join(rest))
    assert evs == [(conv, 2 + i, f"{alice.name.lower()}: m{i}") for i in range(3)], rest

    # --json: the stream's event objects, from every conversation (--last 1:
    # once the last event of each is printed, the resume point is set and
    # nothing sent after can be missed, whenever the stream opens)
    async with Harness(server) as h:
        ws = await h.ws(alice.token, name="alice-ws")
        t = bob.bg("--json", "tail", "--last", "1", "--count", "4")
        old = [json.loads(t.line()), json.loads(t.line())]
        assert [(o["conversation"], o["seq"], o["body"]) for o in old] == [(conv, 4, "m2"), (other, 4, "elsewhere 2")]
        a1 = await ws.send_msg(conv, "j1")
        a2 = await ws.send_msg(other, "j2")
        rc, rest = await asyncio.to_thread(t.finish)
    assert rc == 0
    objs = [json.loads(x) for x in rest]                    # (order is per conversation only)
    assert sorted((o["type"], o["conversation"], o["seq"], o["body"]) for o in objs) == sorted([
        ("event", conv, a1["seq"], "j1"), ("event", other, a2["seq"], "j2")]), objs


@async_test(90)
async def test_tail_last_then_live_without_gap_or_repeat(server, cli):
    alice, bob = cli().register(), cli().register()
    a = alice.name.lower()
    conv = int(alice.out("dm", bob.name).strip())
    other = int(bob.out("group", "create", "busy", alice.name).strip())
    alice.run("send", str(conv), "--lines", input="one\ntwo\nthree\nfour\n")   # seqs 2..5
    alice.run("send", str(other), "--lines", input="x\ny\n")

    t = bob.bg("tail", str(conv), "--last", "2", "--count", "3")
    first = [t.line(), t.line()]                    # printed from history before anything new
    assert parse_lines("\n".join(first)) == [(conv, 4, f"{a}: three"), (conv, 5, f"{a}: four")]
    alice.out("send", str(other), "not followed")
    alice.out("send", str(conv), "five")
    rc, rest = await asyncio.to_thread(t.finish)
    assert rc == 0, (rest, t.err)
    assert parse_lines("\n".join(rest)) == [(conv, 6, f"{a}: five")]

    # all conversations, --last 1 each, then the next event: nothing twice
    t = bob.bg("tail", "--last", "1", "--count", "3")
    got = parse_lines("\n".join([t.line(), t.line()]))
    assert got == [(conv, 6, f"{a}: five"), (other, 4, f"{a}: not followed")], got   # by id
    alice.out("send", str(other), "live")
    rc, rest = await asyncio.to_thread(t.finish)
    assert rc == 0 and parse_lines("\n".join(rest)) == [(other, 5, f"{a}: live")], rest

    # --json: the same objects from history and from the stream
    t = bob.bg("--json", "tail", str(conv), "--last", "1", "--count", "2")
    old = json.loads(t.line())
    assert (old["type"], old["seq"], old["body"]) == ("event", 6, "five"), old
    alice.out("send", str(conv), "six")
    rc, rest = await asyncio.to_thread(t.finish)
    assert rc == 0 and [(json.loads(x)["type"], json.loads(x)["seq"]) for x in rest] == [("event", 7)], rest


@async_test(150)
async def test_tail_resumes_across_a_server_restart(server, cli):
    """The stream drops when every node is killed, and ends with `reconnect`
    and close 1001 when the server drains; tail reconnects with its last id
    each time and prints what was sent meanwhile once, in order."""
    alice, bob = cli().register(), cli().register()
    a = alice.name.lower()
    conv = int(alice.out("dm", bob.name).strip())
    async with Harness(server) as h:
        ws = await h.ws(alice.token, name="alice-ws")
        t = bob.bg("tail", str(conv), "--count", "6")   # seqs 2..7
        await wait_online(ws, bob.id)
        alice.out("send", str(conv), "before")
        assert parse_lines(t.line()) == [(conv, 2, f"{a}: before")]
    await asyncio.to_thread(server.restart)            # SIGKILL every node, start again
    for i in range(3):
        alice.out("send", str(conv), f"while away {i}")
    got = [t.line() for _ in range(3)]
    assert parse_lines("\n".join(got)) == [(conv, 3 + i, f"{a}: while away {i}") for i in range(3)], got
    await asyncio.to_thread(server.stop)               # SIGTERM: drains, close 1001
    await asyncio.to_thread(server.start)
    alice.out("send", str(conv), "after the drain")
    alice.out("send", str(conv), "last")
    rc, rest = await asyncio.to_thread(t.finish, 60)
    assert rc == 0, (rc, rest, t.err)
    assert parse_lines("\n".join(rest)) == [(conv, 6, f"{a}: after the drain"), (conv, 7, f"{a}: last")], rest


@async_test(150)
async def test_tail_refreshes_its_token_to_reconnect(cli_bin, server_factory, workdir):
    """A stream outlives its access token; the reconnect after a restart is
    answered 401, so tail refreshes (saving the rotated pair) and goes on."""
    srv = server_factory(["--access-ttl", "1"])
    alice, bob = (Cli(cli_bin, srv, str(workdir)).register() for _ in range(2))
    conv = int(alice.out("dm", bob.name).strip())
    t = bob.bg("tail", str(conv), "--last", "1", "--count", "4")
    assert parse_lines(t.line()) == [(conv, 1, f"* {alice.name.lower()} created a direct conversation")]
    alice.out("send", str(conv), "one")
    assert parse_lines(t.line()) == [(conv, 2, f"{alice.name.lower()}: one")]
    before = bob.saved()["refresh_token"]
    await asyncio.sleep(2.2)                           # bob's access token expires (1-2 s)
    await asyncio.to_thread(srv.restart)
    alice.out("send", str(conv), "two")                # (alice's CLI refreshes too)
    alice.out("send", str(conv), "three")
    rc, rest = await asyncio.to_thread(t.finish, 60)
    assert rc == 0, (rest, t.err)
    assert [s for _, s, _ in parse_lines("\n".join(rest))] == [3, 4]
    assert bob.saved()["refresh_token"] != before


@async_test(60)
async def test_tail_ends_when_the_session_is_revoked(server, cli):
    """logout revokes the login session: the stream's last event is close
    4001, the refresh is refused, and tail says so (exit 1)."""
    alice = cli().register()
    conv = int(alice.out("group", "create", "solo").strip())
    t = alice.bg("tail", str(conv), "--last", "1")
    assert parse_lines(t.line()) == [(conv, 1, f'* {alice.name.lower()} created "solo"')]
    async with Harness(server) as h:
        ws = await h.ws(alice.token, name="alice-ws")
        s = alice.saved()
        await h.api.expect(204, "POST", "/api/v1/auth/logout", json_body={"refresh_token": s["refresh_token"]})
        assert await ws.wait_closed() == 4001
    rc, rest = await asyncio.to_thread(t.finish)
    assert rc == 1 and rest == [], (rc, rest)
    err = "\n".join(x for x in t.err if x)
    assert err.startswith("parley: tail: ") and "log in again" in err, err


@async_test(150)
async def test_tail_fills_a_large_group_resumed_online_only(cli_bin, server_factory, workdir):
    """A large group is not replayed on resume (the server moves the cursor
    to the head and says synced online_only): tail prints what was skipped
    from history, once, in order (before: those events never appeared)."""
    srv = server_factory(["--large-group", "2"])
    alice, bob, carol = (Cli(cli_bin, srv, str(workdir)).register() for _ in range(3))
    a = alice.name.lower()
    g = int(alice.out("group", "create", "big", bob.name, carol.name).strip())
    t = bob.bg("tail", str(g), "--last", "1", "--count", "5")
    assert parse_lines(t.line()) == [(g, 1, f'* {a} created "big"')]
    alice.out("send", str(g), "before")
    assert parse_lines(t.line()) == [(g, 2, f"{a}: before")]
    t.p.send_signal(signal.SIGSTOP)                    # tail cannot reconnect before the sends
    try:
        await asyncio.to_thread(srv.restart)           # its stream is gone
        async with Harness(srv) as h:
            for i in range(3):
                await h.api.expect((200, 201), "POST", f"/api/v1/conversations/{g}/messages",
                                   token=alice.token,
                                   json_body={"client_msg_id": f"gap-{i}", "body": f"in the gap {i}"})
    finally:
        t.p.send_signal(signal.SIGCONT)                # it finds the stream dead and resumes
    rc, rest = await asyncio.to_thread(t.finish, 60)
    assert rc == 0, (rc, rest, t.err)
    assert parse_lines("\n".join(rest)) == [(g, 3 + i, f"{a}: in the gap {i}") for i in range(3)], rest


@async_test(90)
async def test_a_running_parley_never_becomes_another_user(cli_bin, server_factory, workdir):
    """A tail whose session file is logged in to another account meanwhile
    stops at its next refresh instead of going on as that account (before:
    it adopted the other user's tokens and printed their conversations)."""
    srv = server_factory(["--access-ttl", "1"])
    alice, bob = (Cli(cli_bin, srv, str(workdir)).register() for _ in range(2))
    secret = int(bob.out("group", "create", "bob only").strip())
    bob.out("send", str(secret), "bob's secret")
    conv = int(alice.out("group", "create", "alice's").strip())
    t = alice.bg("tail", "--last", "1")
    assert parse_lines(t.line()) == [(conv, 1, f'* {alice.name.lower()} created "alice\'s"')]
    alice.out("login", bob.name)                       # the same session file, now bob's
    await asyncio.sleep(2.2)                           # alice's access token expires (it lives 1-2 s)
    await asyncio.to_thread(srv.restart)               # the stream must reconnect: 401, refresh
    rc, rest = await asyncio.to_thread(t.finish, 60)
    assert rc == 1 and rest == [], (rc, rest, t.err)
    assert not any(x and "secret" in x for x in t.err), t.err
    # and it says why (audit H: a bare "401 unauthorized" read like a server fault)
    assert any(x and "logged in to another user meanwhile" in x for x in t.err), t.err


def test_send_needs_a_login_before_any_text_leaves(cli, server):
    """send with no token for the server named asks nothing (before: it
    POSTed the text anonymously, retrying, to whatever server it was given)."""
    alice = cli().register()
    other = f"http://127.0.0.1:{free_port()}"
    p = alice.run("--server", other, "send", "1", "hi", expect=1)
    assert p.stderr.startswith(f"parley: send: not logged in to {other}"), p.stderr
    p = cli().run("send", "1", "hi", expect=1)
    assert "not logged in" in p.stderr, p.stderr


def test_history_after_zero_is_a_window_and_a_lone_dash_is_text(cli):
    alice, bob = cli().register(), cli().register()
    conv = int(alice.out("dm", bob.name).strip())
    alice.run("send", str(conv), "--lines", input="".join(f"m{i}\n" for i in range(2, 13)))   # 2..12
    seqs = [s for _, s, _ in parse_lines(alice.out("history", str(conv), "--after", "0", "--before", "10",
                                                   "--limit", "3"))]
    assert seqs == [1, 2, 3], seqs                     # the lowest of the window (before: 7, 8, 9)
    seqs = [s for _, s, _ in parse_lines(alice.out("history", str(conv), "--before", "10", "--limit", "3"))]
    assert seqs == [7, 8, 9], seqs
    assert alice.out("send", str(conv), "--", "-") == f"{conv}#13\n"      # "-" after -- is the text
    assert parse_lines(alice.out("history", str(conv), "--limit", "1")) == [(conv, 13, f"{alice.name.lower()}: -")]


def test_tail_refuses_bad_arguments(cli):
    alice = cli().register()
    assert alice.run("tail", "--count", "0", expect=2).returncode == 2
    assert alice.run("tail", "--last", "x", expect=2).returncode == 2
    assert alice.run("tail", "999999", expect=1).stderr == \
        "parley: tail: 404 not_found: no such conversation\n"
    fresh = cli()
    assert "not logged in" in fresh.run("tail", expect=1).stderr


# --------------------------------------------------------------------------
# token refresh


def test_token_refresh(cli_bin, server_factory, workdir):
    srv = server_factory(["--access-ttl", "1"])        # seconds (README: access-ttl): a token
    # lives at least that and less than a second more
    alice = Cli(cli_bin, srv, str(workdir))
    alice.register()
    before = alice.saved()
    time.sleep(2.2)                                    # past the access token's life
    assert alice.run("whoami", env={"PARLEY_TOKEN": before["access_token"]}, expect=1).stderr.startswith(
        "parley: whoami: 401 unauthorized")           # an env token is never refreshed
    assert alice.out("whoami") == f"{alice.name.lower()} (user {alice.id})\n"
    after = alice.saved()
    assert after["refresh_token"] != before["refresh_token"]
    assert after["access_token"] != before["access_token"]
    assert stat.S_IMODE(os.stat(alice.session).st_mode) == 0o600

    # two processes needing a refresh at once: one rotates, the other takes
    # the saved pair (presenting the replaced token would be refused)
    time.sleep(2.2)
    procs = [subprocess.Popen([cli_bin, "whoami"], env=alice.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, encoding="utf-8") for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=TIMEOUT)
        no_sanitizer_report(err, "concurrent whoami")
        assert p.returncode == 0 and out == f"{alice.name.lower()} (user {alice.id})\n", (out, err)
    assert alice.saved()["refresh_token"] != after["refresh_token"]
    assert alice.out("whoami")                         # the login session is still alive


# --------------------------------------------------------------------------
# errors and exit statuses


def test_errors_and_exit_statuses(cli, server):
    alice = cli().register()
    for args in ([], ["bogus"], ["send"], ["history", "1", "--limit"], ["whoami", "extra"],
                 ["read", "1", "seq"], ["--server"], ["search"]):
        p = alice.run(*args, expect=2)
        assert p.stderr.startswith("parley: ") and "usage: parley" in p.stderr, (args, p.stderr)
    p = alice.run("help")
    for word in ("register", "login", "logout", "whoami", "users", "conversations", "dm", "group create",
                 "group add", "group remove", "leave", "members", "send", "history", "tail", "read", "search"):
        assert word in p.stdout, word
    assert alice.out("--help") == p.stdout and alice.out("-h") == p.stdout
    assert alice.out("--version").startswith("parley ")
    # refused by the server: 4xx, its code and message
    p = alice.run("history", "424242", expect=1)
    assert p.stderr == "parley: history: 404 not_found: no such conversation\n", p.stderr
    p = alice.run("send", "424242", "x", expect=1)
    assert p.stderr == "parley: send: 404 not_found: no such conversation\n", p.stderr
    # no server there: exit 3 (also for a session made elsewhere)
    down = f"http://127.0.0.1:{free_port()}"
    p = alice.run("--server", down, "whoami", expect=3)
    assert p.stderr.startswith(f"parley: whoami: cannot reach {down}: "), p.stderr
    p = alice.run("conversations", env={"PARLEY_SERVER": down}, expect=3)
    assert "cannot reach" in p.stderr
    assert alice.run("--server", "ftp://x", "whoami", expect=2).returncode == 2
    # a --cacert file that cannot be read: exit 3 on http too, before any request
    for args, env in ((["--cacert", "/nonexistent/ca.pem"], None), ([], {"PARLEY_CACERT": "/nonexistent/ca.pem"})):
        p = alice.run(*args, "whoami", env=env, expect=3)
        assert p.stderr == "parley: cannot read the --cacert file /nonexistent/ca.pem: No such file or directory\n", \
            p.stderr
    # --server wins over the environment; a trailing slash is the same server
    assert alice.out("--server", server.base_url + "/", "whoami", env={"PARLEY_SERVER": down})


def test_send_to_a_stopped_server_is_exit_3(cli, server):
    alice = cli().register()
    conv = int(alice.out("dm", cli().register().name).strip())
    server.stop()
    p = alice.run("send", str(conv), "lost?", expect=3)      # after its bounded retries
    assert p.stderr.startswith("parley: send: cannot reach"), p.stderr
    assert alice.run("history", str(conv), expect=3).returncode == 3
    server.start()
    assert "lost?" not in alice.out("history", str(conv))


@pytest.mark.embedded_only("parleyd's own TLS; in a cluster HAProxy terminates it (test_tls.py)")
@async_test(90)
async def test_https_with_cacert(cli_bin, parleyd_bin, mode, workdir):
    from parleyd_proc import finish
    from test_tls import TlsServer, make_cert
    crt, key = make_cert(str(workdir), "srv", "parley-cli-test", 4242)
    s = TlsServer(parleyd_bin, str(workdir / "srv"), crt, key, [crt])
    try:
        s.start()
        alice, bob = Cli(cli_bin, s, str(workdir)), Cli(cli_bin, s, str(workdir))
        alice.run("register", alice.name, env={"PARLEY_CACERT": crt})
        bob.run("--cacert", crt, "register", bob.name)
        # the session file keeps the CA its login used (audit C3: a plain
        # `whoami` after `--cacert ... login` failed); without one, not trusted
        p = alice.run("whoami")
        assert alice.name.lower() in p.stdout, p.stdout
        carol = Cli(cli_bin, s, str(workdir))
        p = carol.run("register", carol.name, expect=3)
        assert p.stderr.startswith(f"parley: register: cannot reach {s.base_url}: ") and "certificate" in p.stderr
        # PEM-looking but not loadable: the file is named, not the server (audit V2 #3)
        bad = workdir / "bad.pem"
        bad.write_text("-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n")
        p = alice.run("--cacert", str(bad), "whoami", expect=3)
        assert p.stderr.startswith(f"parley: whoami: cannot use the --cacert file {bad}: "), p.stderr
        conv = int(alice.out("--cacert", crt, "dm", bob.name).strip())
        t = bob.bg("tail", str(conv), "--last", "1", "--count", "2", env={"PARLEY_CACERT": crt})
        assert parse_lines(t.line())[0][1] == 1                # the stream over https too
        alice.out("--cacert", crt, "send", str(conv), "over tls")
        rc, rest = await asyncio.to_thread(t.finish)
        assert rc == 0 and parse_lines("\n".join(rest)) == [(conv, 2, f"{alice.name.lower()}: over tls")]
    finally:
        problems = finish([s], "test_https_with_cacert")
    assert not problems, problems


# --------------------------------------------------------------------------
# read, search


def test_read_marks_read(cli):
    alice, bob = cli().register(), cli().register()
    conv = int(bob.out("dm", alice.name).strip())
    bob.run("send", str(conv), "--lines", input="a\nb\nc\n")            # seqs 2, 3, 4

    def mine():
        cs = [json.loads(x) for x in alice.out("--json", "conversations").splitlines()]
        return next(c for c in cs if c["id"] == conv)
    assert mine()["unread"] == 3
    assert alice.out("read", str(conv), "3") == f"read {conv} up to #3\n"
    assert mine()["unread"] == 1
    assert alice.out("read", "@" + bob.name) == f"read {conv} up to #4\n"   # default: the last
    c = mine()
    assert c["unread"] == 0 and c["read_seq"] == 4, c
    assert f"  unread 0  {bob.name.lower()}: c" in alice.out("ls")
    assert alice.run("read", "424242", expect=1).stderr.startswith("parley: read: 404 not_found")
    # past the last event: what the server applies (the last); never back
    assert alice.out("read", str(conv), "99") == f"read {conv} up to #4\n"
    assert alice.out("read", str(conv), "2") == f"read {conv} up to #4\n"


def test_search(cli):
    alice, bob = cli().register(), cli().register()
    conv = int(alice.out("dm", bob.name).strip())
    word = "w" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12))
    alice.out("send", str(conv), f"lunch {word} friday")
    deadline = time.monotonic() + 5                    # embedded indexing is asynchronous
    while True:
        lines = bob.out("--json", "search", word, "friday").splitlines()
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(lines) == 1, lines
    r = json.loads(lines[0])
    assert r["conversation"] == conv and r["seq"] == 2 and r["body"] == f"lunch {word} friday"
    assert "\u0002" in r["snippet"]
    assert parse_lines(bob.out("search", word)) == [(conv, 2, f"{alice.name.lower()}: lunch {word} friday")]
    assert bob.out("search", word, "--conversation", "@" + alice.name, "--limit", "5").count("\n") == 1
    assert bob.out("search", word, "absentword") == ""
    assert bob.out("search", word, "--limit", "99").count("\n") == 1   # past one page: paged (audit V2 #2)


# --------------------------------------------------------------------------
# moderation: report, reports, resolve


def test_reports(cli_bin, server_factory, workdir):
    boss = "mod" + secrets.token_hex(4)                # a server admin (registered below)
    srv = server_factory(["--admins", boss])
    alice, bob, carol = (Cli(cli_bin, srv, str(workdir)).register() for _ in range(3))
    mod = Cli(cli_bin, srv, str(workdir), boss).register()
    a, b, c = alice.name.lower(), bob.name.lower(), carol.name.lower()
    g = int(alice.out("group", "create", "Mods", bob.name, carol.name).strip())
    seq = int(bob.out("send", str(g), "buy cheap pills").strip().split("#")[1])

    # carol reports bob's message (a NOTE of several words); a repeat changes nothing
    out = carol.out("report", str(g), str(seq), "spam", "third", "time")
    m = re.fullmatch(rf"reported {g}#{seq} \(report (\d+)\)\n", out)
    assert m, out
    rid = int(m.group(1))
    assert carol.out("report", str(g), str(seq), "abuse") == f"already reported {g}#{seq} (report {rid})\n"
    # bad usage (exit 2, the usage after the line: REASON is a closed list), refused by the server (exit 1)
    for bad in ("boring", "Spam", ""):
        p = carol.run("report", str(g), str(seq), bad, expect=2)
        assert p.stderr.startswith("parley: report: REASON must be spam, abuse, harassment, illegal or other\n") \
            and "usage: parley" in p.stderr, p.stderr
    assert bob.run("report", str(g), str(seq), "spam", expect=1).stderr.startswith(
        "parley: report: 400 bad_request")                             # his own message
    assert carol.run("report", str(g), "999", "spam", expect=1).stderr.startswith("parley: report: 404 not_found")
    for args in (["report", str(g), str(seq)], ["report", str(g), "x", "spam"], ["reports", "1", "2"],
                 ["resolve"], ["resolve", "seven"]):
        assert carol.run(*args, expect=2).stderr.startswith("parley: "), args

    # a direct conversation by @username, a channel by WS/#name
    dm_seq = int(bob.out("send", "@" + carol.name, "psst").strip().split("#")[1])
    dm_rep = json.loads(carol.out("--json", "report", "@" + bob.name, str(dm_seq), "harassment"))
    assert dm_rep["created"] is True and dm_rep["seq"] == dm_seq, dm_rep
    alice.out("workspace", "create", "Acme")
    alice.out("workspace", "add", "Acme", bob.name)
    ch_seq = int(alice.out("send", "Acme/#general", "welcome all").strip().split("#")[1])
    out = bob.out("report", "Acme/#general", str(ch_seq), "other", "--", "-not spam, just odd")
    m = re.fullmatch(rf"reported (\d+)#{ch_seq} \(report (\d+)\)\n", out)
    assert m, out
    ch, ch_rid = int(m.group(1)), int(m.group(2))

    # the group's admin lists its reports, one line each; a member may not
    line = rf"{rid}  {g}#{seq}  \d{{4}}-\d\d-\d\d \d\d:\d\d  open  spam  by {c}  {b}: buy cheap pills  note: third time"
    lines = alice.out("reports", str(g)).splitlines()
    assert len(lines) == 1 and re.fullmatch(line, lines[0]), lines
    assert carol.run("reports", str(g), expect=1).stderr == "parley: reports: 403 forbidden: admins only\n"
    assert alice.run("reports", expect=1).stderr == "parley: reports: 403 forbidden: server admins only\n"
    # the channel's report is of alice's own message: hers to see? no, the server admins'
    assert alice.out("reports", "Acme/#general") == ""
    assert alice.run("resolve", str(ch_rid), expect=1).stderr.startswith("parley: resolve: 404 not_found")
    # a server admin: every report, newest first (the direct one too)
    assert [int(x.split()[0]) for x in mod.out("reports").splitlines()] == [ch_rid, dm_rep["id"], rid]
    objs = [json.loads(x) for x in mod.out("--json", "reports").splitlines()]
    assert objs[1]["kind"] == "direct" and objs[1]["reporter"]["username"] == c and objs[1]["note"] is None, objs
    assert objs[0]["note"] == "-not spam, just odd" and objs[0]["message"]["body"] == "welcome all", objs

    # resolving: not a member's to do (as if it did not exist); an admin's, twice
    assert carol.run("resolve", str(rid), expect=1).stderr.startswith("parley: resolve: 404 not_found")
    assert alice.out("resolve", str(rid)) == f"resolved report {rid}\n"
    assert alice.out("resolve", str(rid)) == f"report {rid} was already resolved\n"
    assert alice.out("reports", str(g)) == ""
    assert "  resolved  spam  " in alice.out("reports", str(g), "--all")
    assert alice.run("resolve", str(dm_rep["id"]), expect=1).returncode == 1      # a direct one: server admins
    assert json.loads(mod.out("--json", "resolve", str(dm_rep["id"]))) == {"id": dm_rep["id"], "changed": True}
    assert [int(x.split()[0]) for x in mod.out("reports").splitlines()] == [ch_rid]
    assert len(mod.out("reports", "--all").splitlines()) == 3
    help_text = alice.out("help")
    for word in ("report CONV SEQ REASON", "reports [CONV] [--all]", "resolve REPORT"):
        assert word in help_text, word


# --------------------------------------------------------------------------
# blocking a user: block, unblock, blocks


def test_block_unblock_and_blocks(cli):
    alice, bob, carol = cli().register(), cli().register(), cli().register()
    a, b, c = alice.name.lower(), bob.name.lower(), carol.name.lower()
    dm = int(alice.out("dm", bob.name).strip())
    bob.out("send", str(dm), "hi alice")
    g = int(alice.out("group", "create", "Still friends", bob.name).strip())

    assert alice.out("blocks") == ""
    # the server's spelling of the name, "@" allowed; a second time changes nothing
    assert alice.out("block", "@" + bob.name.upper()) == f"blocked {b}\n"
    assert alice.out("block", bob.name) == f"{b} was already blocked\n"
    assert alice.out("block", carol.name) == f"blocked {c}\n"
    assert alice.out("blocks") == f"{bob.id} {b}\n{carol.id} {c}\n"          # by id
    objs = [json.loads(x) for x in alice.out("--json", "blocks").splitlines()]
    assert objs == [{"id": bob.id, "username": b}, {"id": carol.id, "username": c}], objs
    assert bob.out("blocks") == ""                        # blocked is not blocking

    # sends in the direct conversation are refused both ways, in the server's words
    for who in (bob, alice):
        p = who.run("send", str(dm), "anyone?", expect=1)
        assert p.stderr == "parley: send: 403 forbidden: blocked\n", p.stderr
    p = bob.run("send", "@" + a, "by name", expect=1)         # the DM exists: found, then refused
    assert p.stderr == "parley: send: 403 forbidden: blocked\n", p.stderr
    p = alice.run("dm", carol.name, expect=1)                 # none yet: none can be started
    assert p.stderr == "parley: dm: 403 forbidden: blocked\n", p.stderr
    assert [t for _, _, t in parse_lines(alice.out("history", str(dm)))][-1] == f"{b}: hi alice"
    bob.out("send", str(g), "groups go on")                   # groups are not affected
    assert json.loads(alice.out("--json", "history", str(g), "--limit", "1"))["body"] == "groups go on"

    # unblocking: "not blocked" is no error; then the conversation takes messages again
    assert alice.out("unblock", bob.name) == f"unblocked {b}\n"
    assert alice.out("unblock", bob.name) == f"{b} was not blocked\n"
    assert json.loads(alice.out("--json", "unblock", carol.name)) == \
        {"user": carol.id, "blocked": False, "changed": True}
    assert alice.out("blocks") == ""
    bob.out("send", str(dm), "back again")
    assert [t for _, _, t in parse_lines(alice.out("history", str(dm)))][-1] == f"{b}: back again"

    # refusals and bad usage
    p = alice.run("block", alice.name, expect=1)
    assert p.stderr.startswith("parley: block: 400 bad_request"), p.stderr
    p = alice.run("block", "nobody_" + a[:10], expect=1)
    assert p.stderr.startswith("parley: block: 404 not_found"), p.stderr
    for args in (["block"], ["unblock", bob.name, carol.name], ["blocks", "extra"], ["block", "@"]):
        assert alice.run(*args, expect=2).stderr.startswith("parley: "), args
    help_text = alice.out("help")
    for word in ("block USER", "unblock USER", "blocks"):
        assert word in help_text, word


# --------------------------------------------------------------------------
# data lifecycle: retention, hold, export, delete-account


@async_test(150)
async def test_retention_and_hold(cli_bin, server_factory, workdir):
    boss = "ad" + secrets.token_hex(4)                 # a server admin (registered below)
    srv = server_factory(["--admins", boss])
    alice, bob, carol = (Cli(cli_bin, srv, str(workdir)).register() for _ in range(3))
    mod = Cli(cli_bin, srv, str(workdir), boss).register()
    a = alice.name.lower()
    async with Harness(srv) as h:
        ws = await h.ws(bob.token, name="bob-ws")      # bob sees the retention event live
        dm = int(alice.out("dm", bob.name).strip())

        # either member of a direct conversation sets it; SECONDS with a unit
        assert alice.out("retention", "@" + bob.name, "7d") == f"retention of {dm}: 7 days (set by the conversation)\n"
        ev = await ws.wait_for(lambda m: m.get("type") == "event" and m.get("conversation") == dm
                               and m.get("kind") == "retention", what="the retention event")
        assert ev["sender"] == alice.id and ev["data"] == {"seconds": 604800}, ev
        assert bob.out("retention", str(dm)) == f"retention of {dm}: 7 days (set by the conversation)\n"
        o = json.loads(bob.out("--json", "retention", str(dm), "86400"))
        assert o["id"] == dm and o["retention_seconds"] == 86400 and o["retention_source"] == "conversation", o
        assert bob.out("retention", str(dm), "0") == f"retention of {dm}: none (messages are kept for ever)\n"
        # the events in history's human lines
        evs = parse_lines(alice.out("history", str(dm)))
        assert [t for _, _, t in evs[-3:]] == [f"* {a} set messages to disappear after 7 days",
                                              f"* {bob.name.lower()} set messages to disappear after 1 day",
                                              f"* {bob.name.lower()} turned off disappearing messages"], evs

        # a group: its admin, not a member (403); out of range is the server's 400
        g = int(alice.out("group", "create", "Short lived", bob.name).strip())
        assert alice.out("retention", str(g), "90m") == f"retention of {g}: 90 minutes (set by the conversation)\n"
        assert bob.run("retention", str(g), "1h", expect=1).stderr.startswith("parley: retention: 403 forbidden")
        assert carol.run("retention", str(g), "1h", expect=1).stderr.startswith("parley: retention: 404 not_found")
        assert alice.run("retention", str(g), "3155760001", expect=1).stderr.startswith(
            "parley: retention: 400 bad_request")
        assert alice.out("retention", str(g), "3155760000") == f"retention of {g}: 36525 days (set by the conversation)\n"
        assert alice.out("retention", str(g), "3601") == f"retention of {g}: 3601 seconds (set by the conversation)\n"
        # a server admin may set any conversation's
        assert mod.out("retention", str(g), "1y") == f"retention of {g}: 1 year (set by the conversation)\n"

        # a workspace's retention applies to its channels without their own
        wsid = int(alice.out("workspace", "create", "Acme").strip())
        alice.out("workspace", "add", "Acme", bob.name)
        general = json.loads(alice.out("--json", "workspace", "show", "Acme"))["general"]
        assert alice.out("retention", "Acme/#general") == f"retention of {general}: none (messages are kept for ever)\n"
        assert alice.out("retention", "--workspace", "Acme", "1d") == f"retention of workspace {wsid}: 1 day\n"
        w = json.loads(alice.out("--json", "retention", "--workspace", str(wsid)))
        assert w["id"] == wsid and w["retention_seconds"] == 86400, w
        assert bob.out("retention", "Acme/#general") == f"retention of {general}: 1 day (set by the workspace)\n"
        assert alice.out("retention", "Acme/#general", "2h") == f"retention of {general}: 2 hours (set by the conversation)\n"
        assert alice.out("retention", f"{wsid}/#general", "0") == f"retention of {general}: 1 day (set by the workspace)\n"
        assert bob.run("retention", "--workspace", "Acme", "1h", expect=1).stderr.startswith(
            "parley: retention: 403 forbidden")
        assert alice.out("retention", "--workspace", "Acme", "0") == (
            f"retention of workspace {wsid}: none (its channels follow their own, else the server's)\n")

        # legal hold: server admins only, by conversation or workspace id
        assert mod.out("hold", str(g)) == f"legal hold on {g}\n"
        assert json.loads(mod.out("--json", "hold", str(g))) == {"conversation": g, "legal_hold": True}
        assert mod.out("hold", "--release", str(g)) == f"legal hold released on {g}\n"
        assert json.loads(mod.out("--json", "hold", str(g), "--release")) == {"conversation": g, "legal_hold": False}
        assert mod.out("hold", "--workspace", str(wsid)) == f"legal hold on workspace {wsid}\n"
        assert mod.out("hold", "--release", "--workspace", str(wsid)) == f"legal hold released on workspace {wsid}\n"
        assert alice.run("hold", str(g), expect=1).stderr == "parley: hold: 403 forbidden: server admins only\n"
        assert alice.run("hold", "--workspace", "Acme", expect=1).stderr.startswith("parley: hold: 403 forbidden")
        assert mod.run("hold", "999999", expect=1).stderr.startswith("parley: hold: 404 not_found")

    # bad usage, before anything is asked of the server
    for args in (["retention"], ["retention", str(dm), "soon"], ["retention", str(dm), "1d", "2d"],
                 ["retention", str(dm), "-1"], ["retention", "--workspace"], ["retention", "--workspace", "Acme", "1", "2"],
                 ["retention", str(dm), "99999999999999999999"], ["hold"], ["hold", str(g), str(dm)],
                 ["hold", "--workspace", "Acme", str(g)], ["hold", "--bogus", str(g)]):
        assert alice.run(*args, expect=2).stderr.startswith("parley: "), args
    help_text = alice.out("help")
    for word in ("retention CONV [SECONDS]", "retention --workspace WS", "hold [--release] CONV",
                 "export [FILE]", "delete-account [--yes]"):
        assert word in help_text, word


def test_export_and_delete_account(cli_bin, server_factory, workdir):
    srv = server_factory(["--retention", "31536000"])   # the server's own: a year (nothing erased here)
    alice, bob = (Cli(cli_bin, srv, str(workdir)).register() for _ in range(2))
    a = alice.name.lower()
    dm = int(alice.out("dm", bob.name).strip())
    g = int(alice.out("group", "create", "Export me", bob.name).strip())
    assert alice.out("retention", str(g)) == f"retention of {g}: 1 year (set by the server)\n"
    bob.out("send", str(dm), "not mine")
    # more than one page of /me/messages (200): the CLI follows `next` to the end
    alice.run("send", str(dm), "--lines", input="".join(f"dm {i}\n" for i in range(205)))
    alice.out("send", str(g), "in the group")
    bob.out("send", str(g), "bob's, not mine")

    out = os.path.join(str(workdir), "alice-export.json")
    assert alice.out("export", out) == f"exported 206 messages, 2 conversations to {out}\n"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    with open(out) as f:
        doc = json.load(f)
    assert doc["user"] == {"id": alice.id, "username": a}, doc["user"]
    assert isinstance(doc["exported"], int) and isinstance(doc["push_devices"], list)
    assert sorted(c["id"] for c in doc["conversations"]) == sorted([dm, g]) and doc["workspaces"] == []
    msgs = doc["messages"]
    assert [m["body"] for m in msgs] == [f"dm {i}" for i in range(205)] + ["in the group"], len(msgs)
    assert all(m["sender"] == alice.id and m["kind"] == "message" for m in msgs)
    assert [(m["conversation"], m["seq"]) for m in msgs[:2]] == [(dm, 3), (dm, 4)], msgs[:2]
    # stdout: the same document (pretty), --json: one compact line
    same = json.loads(alice.out("export"))
    assert same["messages"] == msgs and same["user"] == doc["user"]
    line = alice.out("--json", "export", "-")
    assert line.count("\n") == 1 and json.loads(line)["messages"] == msgs
    # a file that cannot be written: exit 3, nothing left behind
    bad = os.path.join(str(workdir), "no-such-dir", "x.json")
    assert alice.run("export", bad, expect=3).stderr.startswith(f"parley: export: cannot write {bad}")
    assert alice.run("export", "a", "b", expect=2).returncode == 2

    # delete-account: a confirmation (--yes, or the username typed) and the password
    p = alice.run("delete-account", input="", expect=2)
    assert "not confirmed" in p.stderr and "nothing was deleted" in p.stderr, p.stderr
    alice.run("delete-account", input="someone else\n", expect=2)
    p = alice.run("delete-account", "--yes", env={"PARLEY_PASSWORD": "not the password"}, expect=1)
    assert p.stderr == "parley: delete-account: 403 forbidden: wrong password (nothing was deleted)\n", p.stderr
    p = alice.run("delete-account", input=f"{a}\n", env={"PARLEY_PASSWORD": None}, expect=2)   # no password line
    assert "no password" in p.stderr, p.stderr
    assert alice.out("whoami") == f"{a} (user {alice.id})\n"          # all of that changed nothing
    assert alice.run("delete-account", "now", expect=2).returncode == 2
    token = alice.token
    # the name typed (any case), then the password, both on stdin
    p = alice.run("delete-account", input=f"{alice.name.upper()}\n{PASSWORD}\n", env={"PARLEY_PASSWORD": None})
    assert p.stdout == f"deleted account {a} (user {alice.id})\n", p.stdout
    assert not os.path.exists(alice.session)                          # the credentials are forgotten
    assert "not logged in" in alice.run("whoami", expect=1).stderr
    assert alice.run("whoami", env={"PARLEY_TOKEN": token}, expect=1).stderr.startswith(
        "parley: whoami: 401 unauthorized")
    # bob: alice left the group; the direct conversation keeps her, renamed
    assert [ln.split()[:2] for ln in bob.out("members", str(g)).splitlines()] == [[str(bob.id), bob.name.lower()]]
    assert parse_lines(bob.out("history", str(g), "--limit", "1"))[0][2] == \
        f"* user {alice.id} left; {bob.name.lower()} is now an admin"       # she was its admin
    assert f"{alice.id} deleted#{alice.id} " in bob.out("members", str(dm))
    # the name is free again
    again = Cli(cli_bin, srv, str(workdir), alice.name).register()
    assert again.id != alice.id


def test_delete_account_hints_wrong_password_only_for_one(cli_bin, server_factory, workdir):
    """A 403 that is not a wrong password (a server admin's account, README
    "--admins") is printed as the server says it, with no word of a wrong
    password (test_export_and_delete_account has the wrong password's line)."""
    boss = "adm" + secrets.token_hex(4)
    srv = server_factory(["--admins", boss])
    admin = Cli(cli_bin, srv, str(workdir), boss).register()
    p = admin.run("delete-account", "--yes", expect=1)                      # the right password
    assert p.stderr.startswith("parley: delete-account: 403 forbidden: ") and "password" not in p.stderr, p.stderr
    assert p.stderr.endswith(" (nothing was deleted)\n"), p.stderr
    assert admin.out("whoami") == f"{boss} (user {admin.id})\n"


def test_a_deleted_accounts_direct_conversation_is_named_as_ls_prints_it(cli):
    """`ls` shows a direct conversation with a deleted account as
    @deleted#ID; that name, typed back as CONV, is the same conversation
    (README "CONV"), and names no other."""
    alice, bob, carol = cli().register(), cli().register(), cli().register()
    dm = int(alice.out("dm", bob.name).strip())
    alice.out("send", str(dm), "hello bob")
    bob.out("send", str(dm), "bye")
    carol_dm = int(carol.out("dm", alice.name).strip())
    bob.run("delete-account", "--yes")
    line = next(ln for ln in alice.out("ls").splitlines() if ln.split()[0] == str(dm))
    assert line.split()[2] == f"@deleted#{bob.id}", line
    hist = parse_lines(alice.out("history", f"@deleted#{bob.id}"))
    assert [t for _, _, t in hist if t.endswith("hello bob")], hist
    assert {c for c, _, _ in hist} == {dm}, hist
    alice.out("read", f"@deleted#{bob.id}")
    assert alice.out("members", f"@deleted#{bob.id}") == alice.out("members", str(dm))
    # someone with whom I have no conversation, and a deleted account that was never there
    p = carol.run("history", f"@deleted#{bob.id}", expect=1)
    assert p.stderr == f"parley: history: no direct conversation with deleted#{bob.id} (parley ls lists them)\n", p.stderr
    assert "@deleted#" not in carol.out("ls") and carol_dm > 0
    p = alice.run("history", "@deleted#999999999", expect=1)
    assert p.stderr.startswith("parley: history: no direct conversation with deleted#999999999"), p.stderr


def test_a_member_who_left_is_named_the_same_in_every_listing(cli):
    """README: names come from the conversation's member list. `ls` named a
    member who left a group by another conversation's list when that one
    came first ("* xeno left"), else "* user 6 left" (audit O): now each
    conversation's events are named by its own list only."""
    dana, xeno = cli().register(), cli().register()
    g = int(dana.out("group", "create", "LsG", xeno.name).strip())
    dm = int(dana.out("dm", xeno.name).strip())
    xeno.out("send", str(dm), "hello dana")
    xeno.out("leave", str(g))                          # the group is the most recent
    want = f"* user {xeno.id} left"
    rows = {int(ln.split()[0]): ln for ln in dana.out("ls").splitlines()}
    assert rows[g].endswith(want), rows
    dana.out("send", str(dm), "ping")                  # now the DM comes first
    rows2 = {int(ln.split()[0]): ln for ln in dana.out("ls").splitlines()}
    assert rows2[g].endswith(want), rows2
    assert dana.out("history", str(g)).splitlines()[-1].endswith(want)


# --------------------------------------------------------------------------
# audit V2: what the CLI does with odd answers and odd arguments


class Stub:
    """A fake server on a free loopback port: answer(method, path) gives
    (status, headers, body) per request; each request's time is kept."""

    def __init__(self, answer):
        import http.server
        stub = self
        self.answer, self.times, self.paths = answer, [], []

        class H(http.server.BaseHTTPRequestHandler):
            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                stub.times.append(time.monotonic())
                stub.paths.append((self.command, self.path))
                status, headers, body = stub.answer(self.command, self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.embedded_only("a stub server: nothing of the cluster's")
def test_send_honours_retry_after_on_503_as_on_429(cli_bin, workdir):
    """Audit V2 #4: a 503 with Retry-After (HAProxy's when no node is up)
    is waited out as a 429's is, not retried at the 0.5 s backoff."""
    ack = json.dumps({"conversation": 12, "seq": 7, "duplicate": False}).encode()
    for status in (503, 429):
        calls = []

        def answer(method, path):
            calls.append(path)
            if len(calls) == 1:
                return status, {"Retry-After": "2", "Content-Type": "application/json"}, \
                    b'{"error":{"code":"x_code","message":"try later"}}'
            return 201, {"Content-Type": "application/json"}, ack
        stub = Stub(answer)
        try:
            u = Cli(cli_bin, stub, str(workdir))
            p = u.run("send", "12", "hello", env={"PARLEY_TOKEN": "t"})
            assert p.stdout == "12#7\n", p.stdout
            assert len(stub.times) == 2, stub.paths
            gap = stub.times[1] - stub.times[0]
            assert gap >= 1.9, (status, gap)               # not the 0.5 s backoff
        finally:
            stub.close()


@pytest.mark.embedded_only("a stub server: nothing of the cluster's")
def test_a_2xx_that_is_not_the_apis_json_is_exit_3(cli_bin, workdir):
    """Audit V2 #5: `200 OK` with `not json` (a proxy, another program on
    the port) is no success: exit 3 and a line saying so, nothing on
    stdout; nor is a JSON object without what the command prints."""
    body = {"b": b"not json"}
    stub = Stub(lambda m, p: (200, {"Content-Type": "text/plain"}, body["b"]))
    try:
        u = Cli(cli_bin, stub, str(workdir))
        env = {"PARLEY_TOKEN": "t"}
        for args in (["whoami"], ["ls"], ["history", "12"], ["blocks"], ["workspaces"], ["search", "x"]):
            p = u.run(*args, env=env, expect=3)
            assert p.stdout == "", (args, p.stdout)
            assert p.stderr == f"parley: {args[0]}: the server's answer (HTTP 200) is not the API's JSON: not json\n", \
                (args, p.stderr)
        body["b"] = b""
        p = u.run("whoami", env=env, expect=3)
        assert p.stderr == "parley: whoami: the server's answer (HTTP 200) is not the API's JSON: (no body)\n", p.stderr
        body["b"] = b'{"foo": 1}'
        p = u.run("whoami", env=env, expect=3)
        assert p.stderr == 'parley: whoami: the server\'s answer is not the API\'s: no "id"\n', p.stderr
        p = u.run("ls", env=env, expect=3)
        assert p.stderr == 'parley: ls: the server\'s answer is not the API\'s: no "conversations"\n', p.stderr
    finally:
        stub.close()


@pytest.mark.embedded_only("a stub server: nothing of the cluster's")
def test_an_answer_without_what_the_command_prints_is_exit_3(cli_bin, workdir):
    """Only the list commands checked that the answer had what they print:
    against `200 {}` the others printed made-up output and exited 0 (`dm
    bob` printed `0`, `report` "reported 5#1 (report 0)", `block` "blocked
    ?", `hold` "legal hold on 5", `export` `{"messages": []}`). Now each is
    exit 3, nothing on stdout, and the line naming the missing field, with
    and without --json."""
    stub = Stub(lambda m, p: (200, {"Content-Type": "application/json"}, b"{}"))
    try:
        u = Cli(cli_bin, stub, str(workdir))
        env = {"PARLEY_TOKEN": "t"}
        for args, cmd, field in ((["dm", "bob"], "dm", "id"), (["group", "create", "X"], "group create", "id"),
                                 (["workspace", "create", "X"], "workspace create", "id"),
                                 (["channel", "create", "1", "x"], "channel create", "id"),
                                 (["report", "5", "1", "spam"], "report", "id"),
                                 (["block", "bob"], "block", "id"), (["unblock", "bob"], "unblock", "id"),
                                 (["hold", "5"], "hold", "legal_hold"),
                                 (["hold", "--release", "--workspace", "1"], "hold", "legal_hold"),
                                 (["retention", "5"], "retention", "retention_seconds"),
                                 (["retention", "5", "1d"], "retention", "retention_seconds"),
                                 (["retention", "--workspace", "1"], "retention", "retention_seconds"),
                                 (["read", "5"], "read", "last_seq"), (["members", "5"], "members", "members"),
                                 (["channels", "1"], "channels", "channels"),
                                 (["channel", "list", "1"], "channel list", "channels"),
                                 (["send", "1/#x", "hi"], "send", "channels"),
                                 (["workspace", "show", "1"], "workspace show", "members"),
                                 (["export"], "export", "conversations"),
                                 (["group", "create", "X", "bob"], "group create", "id"),
                                 (["group", "remove", "5", "bob"], "group remove", "id")):
            for json_opt in ([], ["--json"]):
                p = u.run(*json_opt, *args, env=env, expect=3)
                assert p.stdout == "", (args, json_opt, p.stdout)
                assert p.stderr == f'parley: {cmd}: the server\'s answer is not the API\'s: no "{field}"\n', \
                    (args, json_opt, p.stderr)
    finally:
        stub.close()
    # each of those answered in part: what the command prints is checked too
    answers = {("GET", "/api/v1/users/bob"): {"id": 2}, ("GET", "/api/v1/conversations/5"): {"last_seq": 3},
               ("PUT", "/api/v1/users/2/block"): {"user": 2, "blocked": True},
               ("POST", "/api/v1/conversations/5/messages/1/report"): {"id": 7},
               ("GET", "/api/v1/me/export"): {"conversations": []}}
    stub = Stub(lambda m, p: (200, {"Content-Type": "application/json"},
                              json.dumps(answers.get((m, p.split("?")[0]), {})).encode()))
    try:
        u = Cli(cli_bin, stub, str(workdir))
        for args, field in ((["unblock", "bob"], "username"), (["read", "5"], "read_seq"),
                            (["report", "5", "1", "spam"], "created"), (["export"], "messages")):
            p = u.run(*args, env={"PARLEY_TOKEN": "t"}, expect=3)
            assert p.stdout == "", (args, p.stdout)
            assert p.stderr == f'parley: {args[0]}: the server\'s answer is not the API\'s: no "{field}"\n', \
                (args, p.stderr)
        p = u.run("group", "remove", "5", "bob", env={"PARLEY_TOKEN": "t"}, expect=3)
        assert p.stderr == 'parley: group remove: the server\'s answer is not the API\'s: no "username"\n', p.stderr
        answers[("GET", "/api/v1/users/bob")]["username"] = "bob"
        p = u.run("block", "bob", env={"PARLEY_TOKEN": "t"}, expect=3)
        assert p.stderr == 'parley: block: the server\'s answer is not the API\'s: no "changed"\n', p.stderr
    finally:
        stub.close()


@pytest.mark.embedded_only("refused before any request, in either mode")
def test_cacert_that_is_a_directory_or_not_a_certificate_is_refused_up_front(cli, workdir):
    """Audit V2 #3: a directory, an empty file and a file with no PEM
    certificate are refused as README says (exit 3, before any request,
    over http too), not ignored or reported as an unreachable server."""
    alice = cli().register()
    empty, garbage = workdir / "empty.pem", workdir / "garbage.pem"
    empty.write_text("")
    garbage.write_text("garbage\n")
    cases = ((str(workdir), "Is a directory"),
             (str(empty), "the file is empty (a PEM certificate, -----BEGIN CERTIFICATE-----, is needed)"),
             (str(garbage), "no PEM certificate (-----BEGIN CERTIFICATE-----) in it"))
    for path, why in cases:
        for args, env in ((["--cacert", path], None), ([], {"PARLEY_CACERT": path})):
            p = alice.run(*args, "whoami", env=env, expect=3)
            assert p.stderr == f"parley: cannot read the --cacert file {path}: {why}\n", p.stderr
            assert p.stdout == ""


def test_ls_marks_a_blocked_direct_conversation_for_both(cli):
    """Audit V2 #6: README says the other user sees `blocked` on the direct
    conversation; `ls` shows it to both members while the block lasts."""
    alice, bob = cli().register(), cli().register()
    conv = int(alice.out("dm", bob.name).strip())
    bob.out("send", str(conv), "hi")
    plain = f"{conv}  direct  @{alice.name.lower()}  unread 0  "
    assert plain in bob.out("ls")
    alice.out("block", bob.name)
    assert f"{conv}  direct  @{alice.name.lower()}  blocked  unread 0  " in bob.out("ls")
    assert f"{conv}  direct  @{bob.name.lower()}  blocked  unread 1  " in alice.out("ls")
    alice.out("unblock", bob.name)
    assert plain in bob.out("ls") and "blocked" not in bob.out("ls")


def test_search_pages_through_the_cursor_past_50(cli):
    """Audit V2 #2: --limit beyond the server's page of 50 follows
    next_cursor, newest first, no repeat; without --limit: 20."""
    alice, bob = cli().register(), cli().register()
    conv = int(alice.out("dm", bob.name).strip())
    word = "z" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12))
    alice.run("send", str(conv), "--lines", input="".join(f"{word} {i}\n" for i in range(60)))
    deadline = time.monotonic() + 10                   # embedded indexing is asynchronous
    while True:
        lines = bob.out("--json", "search", word, "--limit", "500").splitlines()
        if len(lines) >= 60 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    seqs = [json.loads(x)["seq"] for x in lines]
    assert seqs == list(range(61, 1, -1)), seqs            # all 60, newest first, once each
    assert [json.loads(x)["seq"] for x in bob.out("--json", "search", word, "--limit", "55").splitlines()] == \
        list(range(61, 6, -1))
    assert len(parse_lines(bob.out("search", word))) == 20
    assert len(parse_lines(bob.out("search", word, "--limit", "51"))) == 51


# --------------------------------------------------------------------------
# audit K3: channel leave of a group, adding a member again, empty arguments,
# invisible format characters, --help's wording


def test_channel_leave_refuses_what_is_not_a_channel_as_join_does(cli):
    """Audit K3 F2: `channel leave CONV` left a plain group (`left 17`)
    while `channel join` of it is refused 404 "no such channel": now leave
    reads the conversation first and refuses a group or a direct one the
    same way, changing nothing."""
    alice, bob = cli().register(), cli().register()
    a, b = alice.name.lower(), bob.name.lower()
    g = int(alice.out("group", "create", "Tmp", bob.name).strip())
    dm = int(alice.out("dm", bob.name).strip())
    p = bob.run("channel", "join", str(g), expect=1)
    assert p.stderr == "parley: channel join: 404 not_found: no such channel\n", p.stderr
    for who, conv in ((bob, str(g)), (alice, str(g)), (alice, str(dm)), (bob, "@" + alice.name)):
        for args in (["channel", "leave", conv], ["--json", "channel", "leave", conv]):
            p = who.run(*args, expect=1)
            assert (p.stdout, p.stderr) == ("", "parley: channel leave: 404 not_found: no such channel\n"), (args, p)
    assert alice.out("members", str(g)) == f"{alice.id} {a} admin\n{bob.id} {b} member\n"
    assert [t for _, _, t in parse_lines(alice.out("history", str(g)))] == [f'* {a} created "Tmp"']
    assert bob.out("members", str(dm)) == alice.out("members", str(dm))
    # a channel is still left, by id or WS/#name; then it is the server's 404
    ws = int(alice.out("workspace", "create", "LeaveCo").strip())
    alice.out("workspace", "add", str(ws), bob.name)
    r = int(alice.out("channel", "create", str(ws), "random").strip())
    assert bob.out("channel", "join", f"{ws}/#random") == f"joined {r}\n"
    assert bob.out("channel", "leave", str(r)) == f"left {r}\n"
    assert bob.run("channel", "leave", str(r), expect=1).stderr == \
        "parley: channel leave: 404 not_found: no such conversation\n"
    assert bob.out("channel", "join", f"{ws}/#random") == f"joined {r}\n"
    assert bob.out("--json", "channel", "leave", "LeaveCo/#random") == ""
    assert f"{r}  #random  public   -       members 1" in bob.out("channels", str(ws))
    # leave (not channel leave) still leaves a group
    assert bob.out("leave", str(g)) == f"left {g}\n"


def test_adding_a_member_again_says_nothing_changed(cli):
    """Audit K3 F4: `group add` and `workspace add` of a current member
    printed `added bob to ...` (the server answers 200 either way and
    changes nothing); now they say `bob was already a member of ...`, as
    block/report/resolve say when nothing changed. --json: the server's
    object both times."""
    alice, bob, carol = cli().register(), cli().register(), cli().register()
    a, b, c = alice.name.lower(), bob.name.lower(), carol.name.lower()
    g = int(alice.out("group", "create", "Again", bob.name).strip())
    assert alice.out("group", "add", str(g), bob.name) == f"{b} was already a member of {g}\n"
    assert alice.out("group", "add", str(g), "@" + alice.name) == f"{a} was already a member of {g}\n"
    assert alice.out("group", "add", str(g), carol.name) == f"added {c} to {g}\n"
    assert alice.out("group", "add", str(g), "@" + carol.name.upper()) == f"{c} was already a member of {g}\n"
    j1 = json.loads(alice.out("--json", "group", "add", str(g), carol.name))
    assert j1["id"] == g and [m["id"] for m in j1["members"]] == [alice.id, bob.id, carol.id], j1
    # a member who may not add is refused as before, already a member or not
    assert bob.run("group", "add", str(g), carol.name, expect=1).stderr.startswith("parley: group add: 403 forbidden")
    # whoever it names: the server's admin check comes first (audit O4: the
    # CLI looked the name up itself, 404 "no such user")
    assert bob.run("group", "add", str(g), "nobody_" + a[:10], expect=1).stderr.startswith(
        "parley: group add: 403 forbidden")
    assert alice.run("group", "add", str(g), "nobody_" + a[:10], expect=1).stderr.startswith(
        "parley: group add: 404 not_found")
    assert [t for _, _, t in parse_lines(alice.out("history", str(g)))] == [f'* {a} created "Again"',
                                                                          f"* {a} added {c}"]
    ws = int(alice.out("workspace", "create", "AgainCo").strip())
    assert alice.out("workspace", "add", str(ws), bob.name) == f"added {b} to workspace {ws}\n"
    assert alice.out("workspace", "add", "AgainCo", "@" + bob.name) == f"{b} was already a member of workspace {ws}\n"
    assert alice.out("workspace", "add", str(ws), bob.name.upper()) == \
        f"{b} was already a member of workspace {ws}\n"                 # as stored (audit O5)
    assert alice.out("workspace", "add", str(ws), alice.name) == f"{a} was already a member of workspace {ws}\n"
    # remove prints the stored name too (audit O6)
    assert alice.out("group", "remove", str(g), carol.name.upper()) == f"removed {c} from {g}\n"
    w = json.loads(alice.out("--json", "workspace", "add", str(ws), bob.name))
    assert w["id"] == ws and [m["id"] for m in w["members"]] == [alice.id, bob.id], w
    assert alice.out("workspace", "show", str(ws)) == f"{alice.id} {a} admin\n{bob.id} {b} member\n"
    assert alice.run("workspace", "add", str(ws), "nobody_" + a[:10], expect=1).stderr.startswith(
        "parley: workspace add: 404 not_found")
    # a role change names the member as stored too
    assert alice.out("workspace", "role", str(ws), bob.name.upper(), "admin") == f"{b} is an admin of workspace {ws}\n"
    assert alice.out("group", "role", str(g), "@" + bob.name.upper(), "admin") == f"{b} is an admin of {g}\n"
    assert alice.out("workspace", "remove", str(ws), bob.name.upper()) == f"removed {b} from workspace {ws}\n"


@pytest.mark.embedded_only("the CLI's own checks: a usage error sends nothing, in either mode")
def test_an_empty_argument_is_a_usage_error_naming_it(cli):
    """Audit K3 F5: `users ''`, `search ''` and `workspace create ''` were
    sent to the server (exit 1, `400 bad_request: "q" must not be empty`, a
    parameter the user never sees); `group create ''` and `channel create
    WS ''` were usage errors worded otherwise. Now each is exit 2, the usage,
    and a line naming the argument."""
    alice = cli().register()
    ws = alice.out("workspace", "create", "EmptyCo").strip()
    for args, cmd, what in ((["users", ""], "users", "QUERY"), (["users", "  "], "users", "QUERY"),
                            (["search", ""], "search", "QUERY"), (["search", "", " "], "search", "QUERY"),
                            (["search", "\t", "--limit", "3"], "search", "QUERY"),
                            (["workspace", "create", ""], "workspace create", "NAME"),
                            (["group", "create", ""], "group create", "TITLE"),
                            (["group", "create", "", alice.name], "group create", "TITLE"),
                            (["channel", "create", ws, ""], "channel create", "NAME"),
                            (["channel", "create", ws, "#"], "channel create", "NAME")):
        p = alice.run(*args, expect=2)
        lines = p.stderr.splitlines()
        assert p.stdout == "" and lines[0].startswith(f"parley: {cmd}: {what} must not be "), (args, p.stderr)
        assert lines[1].startswith("usage: parley"), (args, p.stderr)
    assert alice.out("workspaces") == f'{ws}  "EmptyCo"  admin  members 1  channels 1\n'
    assert alice.out("ls").count("\n") == 1                 # #general only: nothing was created


@pytest.mark.embedded_only("the CLI's own checks: a usage error sends nothing, in either mode")
def test_an_empty_username_is_a_usage_error_on_every_path(cli):
    """`register ''` and `login ''` were sent to the server (exit 1, its 400
    and 401), and so was `group add CONV ''` (exit 1, 404), while `group
    remove`, `workspace add`, `dm` and `block` said `"" is not a username`
    (exit 2). Now all of them do, and send nothing; a real name still works
    on each path."""
    alice, bob = cli().register(), cli().register()
    g = alice.out("group", "create", "Empties").strip()
    ws = alice.out("workspace", "create", "EmptyUsers").strip()
    for args, cmd, arg in ((["register", ""], "register", ""), (["login", ""], "login", ""),
                           (["group", "add", g, ""], "group add", ""), (["group", "add", g, "@"], "group add", "@"),
                           (["group", "remove", g, ""], "group remove", ""),
                           (["workspace", "add", ws, ""], "workspace add", ""), (["dm", ""], "dm", ""),
                           (["block", ""], "block", "")):
        p = alice.run(*args, expect=2)
        lines = p.stderr.splitlines()
        assert p.stdout == "" and lines[0] == f'parley: {cmd}: "{arg}" is not a username', (args, p.stderr)
        assert lines[1].startswith("usage: parley"), (args, p.stderr)
    assert alice.out("members", g) == f"{alice.id} {alice.name.lower()} admin\n"    # nobody was added
    assert alice.out("group", "add", g, "@" + bob.name) == f"added {bob.name.lower()} to {g}\n"
    assert alice.out("group", "remove", g, bob.name) == f"removed {bob.name.lower()} from {g}\n"
    assert alice.out("group", "add", g, bob.name) == f"added {bob.name.lower()} to {g}\n"
    assert alice.out("login", alice.name) == f"logged in as {alice.name.lower()} (user {alice.id})\n"
    carol = cli()
    assert carol.out("register", carol.name).startswith(f"registered {carol.name.lower()} (user ")


@pytest.mark.embedded_only("how the CLI prints text, whichever mode stored it")
def test_invisible_format_characters_are_shown_as_replacement(cli):
    """Audit K3 F3: U+202E and the other bidirectional controls, U+2028/9
    and invisible format characters went to the terminal as they were (a
    message could read backwards or hide text). Now they are shown as U+FFFD,
    as control characters are; what words and emoji need (ZWJ, ZWNJ,
    variation selectors, a flag's tags) stays."""
    alice, bob = cli().register(), cli().register()
    a = alice.name.lower()
    conv = int(alice.out("dm", bob.name).strip())
    bad = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
           "\u200e", "\u200f", "\u061c", "\u2028", "\u2029", "\u200b", "\u2060", "\u2063", "\u2064",
           "\u206a", "\u206f", "\ufeff", "\u00ad", "\u180e", "\ufff9", "\ufffb", "\U000e0001", "\U000e0041"]
    keep = ("family \U0001f468\u200d\U0001f469\u200d\U0001f467 heart \u2764\ufe0f "
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 "
            "flag \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f \u00e9\u0301")
    alice.out("send", str(conv), "".join(f"<{ch}>" for ch in bad))
    alice.out("send", str(conv), keep)
    alice.out("send", str(conv), "pay to \u202emoc.live\u202c now")
    want = ["".join("<\ufffd>" for _ in bad), keep, "pay to \ufffdmoc.live\ufffd now"]
    for out in (bob.out("history", str(conv)), bob.out("tail", str(conv), "--last", "3", "--count", "3")):
        shown = [f"U+{ord(ch):04X}" for ch in bad if ch in out]
        assert not shown, f"printed as they are: {shown}"
        evs = parse_lines(out)
        assert [t for _, _, t in evs[-3:]] == [f"{a}: {w}" for w in want], out
    row = [ln for ln in bob.out("ls").splitlines() if ln.startswith(f"{conv}  ")][0]
    assert row.endswith(f"{a}: pay to \ufffdmoc.live\ufffd now"), row
    # --json is the server's text, untouched (U+2028 too: split at "\n" only)
    bodies = [json.loads(x)["body"] for x in bob.out("--json", "history", str(conv)).split("\n")[-4:-1]]
    assert bodies == ["".join(f"<{ch}>" for ch in bad), keep, "pay to \u202emoc.live\u202c now"]


@pytest.mark.embedded_only("the CLI's own --help")
def test_help_says_what_readme_says(cli):
    """Audit K3 F6: --help's `users` line left out that you find yourself
    too, and its exit status line left out "not logged in" (exit 1)."""
    alice = cli()
    h = alice.out("--help")
    assert "users QUERY                   you and the people you share a conversation with" in h, h
    assert "1 refused by the server (4xx, or not logged in)" in " ".join(h.split()), h
    # and README says the same
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = " ".join(f.read().split())
    assert "| `users QUERY` | you and the people you share a conversation with" in readme
    assert "1 the server refused (4xx, or not logged in)" in readme
    p = alice.run("whoami", expect=1)                       # no session: exit 1 as documented
    assert "not logged in" in p.stderr, p.stderr
