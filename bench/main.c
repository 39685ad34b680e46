/* main.c — parley-bench: options, the embedded parleyd, the phases that
 * drive the worker processes, merging their results, the verdict.
 *
 *   parley-bench idle|dm|group|storm [options]     (--help lists them)
 *
 * Owns: the parent process (see bench.h for the process shape and the
 * parent <-> worker line protocol) and the server it starts. Does not own:
 * client sockets (worker.c), REST setup (setup.c), output format (report.c).
 *
 * Phases, driven by the parent, each ended by every worker's report:
 *
 *   CONNECT --connected--> [RUN --stop--> STOPPED]... --finish--> ACKED
 *           --expect--> RESULT --quit-->
 *
 * The verdict ("ok") asks only for correctness: every connection made,
 * every send acknowledged, every delivery in order with nothing lost or
 * duplicated, no error, the server alive. Timings are reported, never judged.
 * Exit status: 0 ok, 1 a correctness problem or a failed run, 2 bad usage.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "tlsc.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "hdr.h"
#include "report.h"

typedef struct wproc {
    pid_t  pid;
    int    cmd, rep;         /* pipe ends: commands out, reports in */
    char  *buf;
    size_t len, cap;
    json_t *msg;             /* the report being waited for          */
} wproc;

static pb_opts  O;
static pb_plan  P;
static wproc   *WP;
static pid_t    server_pid;          /* embedded server, 0 if external       */
static char     scratch[PATH_MAX];   /* embedded server's directory          */
static int      server_died;
static char     server_exit[128] = "running";
static int      fds_max;             /* the most descriptors any server held */
/* The processes measured (RSS, fds, CPU): the embedded server, or each of
 * --server-pid's. */
static int      spids[PB_MAX_SERVERS];
static int      nspids;
static int      fds_max_of[PB_MAX_SERVERS];
static int      fds_poll_next;       /* round robin over spids (poll_fds)    */
static char     server_cmd[4096];    /* the embedded server's command line   */

/* ---- options ---------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f,
"usage: parley-bench WORKLOAD [options]\n"
"workloads:\n"
"  idle    hold N authenticated connections; server RSS and memory per connection\n"
"  dm      N/2 pairs in direct conversations exchange messages (rate or max)\n"
"  group   one group of N online members; --senders of them send\n"
"  storm   N clients in groups of --group-size drop at once and resume; a feeder\n"
"          per worker keeps sending into every group throughout\n"
"options:\n"
"  -n, --clients N        connections of the workload (default 1000)\n"
"  --workers N            worker processes (default: one per --per-worker)\n"
"  --per-worker N         connections per worker process (default 15000)\n"
"  --addrs N              loopback source addresses 127.0.0.2.. (default 8)\n"
"  --duration S           measured seconds (default 10)\n"
"  --warmup S             seconds before measuring; storm: before the drop (default 1)\n"
"  --rate R|max|P%%        total messages/s (R > 0); max = each sender keeps --window in\n"
"                         flight; P%% = probe max for --probe s, then run at P%% of it\n"
"                         (1 <= P <= 100)\n"
"                         (default: max; storm: 2000)\n"
"  --probe S              seconds of the max probe for --rate P%% (default 5)\n"
"  --window N             in-flight sends per sender at max (default 4)\n"
"  --senders N            group: members that send (default 10)\n"
"  --group-size N         storm: clients per group (default 10)\n"
"  --body N               message body bytes (default 64)\n"
"  --hold S               idle: seconds to hold before measuring (default 5)\n"
"  --offline S            storm: seconds between the drop and the reconnect (default 1)\n"
"  --resume auth|sync     storm: cursors in the first-frame auth (default) or a\n"
"                         sync after a handshake-authenticated ready\n"
"  --no-idle-convs        idle: users without conversations (default: pairs in DMs)\n"
"  --connect-conc N       handshakes in flight per worker (default 512)\n"
"  --reconnect-conc N     storm: the same for the reconnect (default 0: all at once)\n"
"  --http-conc N          setup: keep-alive REST connections (default 64)\n"
"  --tls                  speak TLS (https, wss) to the server: one started with\n"
"                         --tls-cert/--tls-key (no certificate verification)\n"
"  --timeout S            wait for acks / deliveries / catch-up (default 30)\n"
"  --server HOST:PORT[,HOST:PORT...]\n"
"                         use running servers instead of starting one; with a\n"
"                         list (a cluster's nodes) client i connects to the\n"
"                         (i mod count)th, and the REST set-up spreads too;\n"
"                         HOST: a numeric IPv4 address or a name (its IPv4)\n"
"  --server-pid PID[,PID...]\n"
"                         their processes, for RSS, CPU and fd counts (summed,\n"
"                         and reported per process); a run fails if one exits\n"
"  --parleyd PATH         binary for the embedded server (default $PARLEYD_RELEASE,\n"
"                         else parleyd next to this binary)\n"
"  --server-args \"...\"    extra arguments for the embedded server\n"
"  --json PATH            write the result document there\n"
"  --label TEXT           recorded in the JSON\n"
"  --keep-data            keep the embedded server's scratch directory\n"
"  -v                     progress on stderr\n");
}

/* Strict numbers (audit V2 #1): the whole argument is a decimal number in
 * [min, max], else a line naming the option and -1. */
static int opt_int(const char *opt, const char *s, long min, long max, int *out) {
    char *end;
    errno = 0;
    long v = s[0] >= '0' && s[0] <= '9' ? strtol(s, &end, 10) : 0;   /* digits only: no sign, no blank */
    if (s[0] < '0' || s[0] > '9' || *end || errno || v < min || v > max) {
        fprintf(stderr, "parley-bench: %s %s: must be an integer in [%ld, %ld]\n", opt, s, min, max);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* A plain decimal number: digits with at most one '.', nothing else (no
 * sign, blank, exponent, hex, inf or nan). 1 with *v, else 0. */
static int plain_number(const char *s, double *v) {
    int digits = 0, dots = 0;
    for (const char *p = s; *p; p++) {
        if (*p >= '0' && *p <= '9') digits++;
        else if (*p == '.' && !dots) dots++;
        else return 0;
    }
    if (!digits) return 0;
    *v = strtod(s, NULL);
    return 1;
}

/* A number of seconds in [min, max] (min_open: above min, not at it). */
static int opt_secs(const char *opt, const char *s, double min, int min_open, double max, double *out) {
    double v;
    if (!plain_number(s, &v) || (min_open ? v <= min : v < min) || v > max) {
        fprintf(stderr, "parley-bench: %s %s: must be a number of seconds %s %g, at most %.0f\n", opt, s,
                min_open ? "above" : "from", min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* --rate: a positive number of messages/s, max, or P% with 1 <= P <= 100. */
static int parse_rate(const char *s) {
    size_t n = strlen(s);
    double v;
    char tmp[32];
    if (!strcmp(s, "max")) {
        O.rate = 0;
        O.rate_frac = 0;
        return 0;
    }
    if (n > 1 && n < sizeof tmp && s[n - 1] == '%') {
        memcpy(tmp, s, n - 1);
        tmp[n - 1] = '\0';
        if (plain_number(tmp, &v) && v >= 1 && v <= 100) {
            O.rate = 0;
            O.rate_frac = v / 100.0;
            return 0;
        }
    } else if (plain_number(s, &v) && v > 0 && v <= 1e9) {
        O.rate = v;
        O.rate_frac = 0;
        return 0;
    }
    fprintf(stderr, "parley-bench: --rate %s: give a positive number of messages/s, max, or P%% with "
            "1 <= P <= 100\n", s);
    return -1;
}

static int parse_opts(int argc, char **argv) {
    memset(&O, 0, sizeof O);
    O.clients = 1000;
    O.per_worker = 15000;
    O.addrs = 8;
    O.duration = 10;
    O.warmup = 1;
    O.rate = -1;
    O.probe = 5;
    O.window = 4;
    O.senders = 10;
    O.group_size = 10;
    O.body_size = 64;
    O.hold = 5;
    O.offline = 1;
    O.idle_convs = 1;
    O.connect_conc = 512;
    O.http_conc = 64;
    O.timeout = 30;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? -1 : 1;
    }
    const char *wl = argv[1];
    if (!strcmp(wl, "idle")) O.wl = WL_IDLE;
    else if (!strcmp(wl, "dm")) O.wl = WL_DM;
    else if (!strcmp(wl, "group")) O.wl = WL_GROUP;
    else if (!strcmp(wl, "storm")) O.wl = WL_STORM;
    else {
        fprintf(stderr, "parley-bench: unknown workload %s\n", wl);
        usage(stderr);
        return -1;
    }
    enum { o_workers = 256, o_per_worker, o_addrs, o_duration, o_warmup, o_rate, o_probe, o_window,
           o_senders, o_group_size, o_body, o_hold, o_offline, o_resume, o_no_idle_convs,
           o_connect_conc, o_reconnect_conc, o_http_conc, o_timeout, o_server, o_server_pid, o_parleyd, o_server_args,
           o_json, o_label, o_keep, o_tls };
    static const struct option lo[] = {
        {"clients", 1, 0, 'n'}, {"workers", 1, 0, o_workers}, {"per-worker", 1, 0, o_per_worker},
        {"addrs", 1, 0, o_addrs}, {"duration", 1, 0, o_duration}, {"warmup", 1, 0, o_warmup},
        {"rate", 1, 0, o_rate}, {"probe", 1, 0, o_probe}, {"window", 1, 0, o_window},
        {"senders", 1, 0, o_senders}, {"group-size", 1, 0, o_group_size}, {"body", 1, 0, o_body},
        {"hold", 1, 0, o_hold}, {"offline", 1, 0, o_offline}, {"resume", 1, 0, o_resume},
        {"no-idle-convs", 0, 0, o_no_idle_convs}, {"connect-conc", 1, 0, o_connect_conc},
        {"reconnect-conc", 1, 0, o_reconnect_conc},
        {"http-conc", 1, 0, o_http_conc}, {"timeout", 1, 0, o_timeout}, {"server", 1, 0, o_server},
        {"server-pid", 1, 0, o_server_pid}, {"parleyd", 1, 0, o_parleyd},
        {"server-args", 1, 0, o_server_args}, {"json", 1, 0, o_json}, {"label", 1, 0, o_label},
        {"keep-data", 0, 0, o_keep}, {"tls", 0, 0, o_tls}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    optind = 2;
    int ch, bad = 0;
    while (!bad && (ch = getopt_long(argc, argv, "n:vh", lo, NULL)) != -1) {
        switch (ch) {
        case 'n': bad = opt_int("-n", optarg, 1, 10000000, &O.clients); break;
        case 'v': O.verbose = 1; break;
        case 'h': usage(stdout); return 1;
        case o_workers: bad = opt_int("--workers", optarg, 0, 4096, &O.workers); break;
        case o_per_worker: bad = opt_int("--per-worker", optarg, 1, 10000000, &O.per_worker); break;
        case o_addrs: bad = opt_int("--addrs", optarg, 1, 250, &O.addrs); break;
        case o_duration: bad = opt_secs("--duration", optarg, 0, 1, 1e6, &O.duration); break;
        case o_warmup: bad = opt_secs("--warmup", optarg, 0, 0, 1e6, &O.warmup); break;
        case o_rate: bad = parse_rate(optarg); break;
        case o_probe: bad = opt_secs("--probe", optarg, 0, 1, 1e6, &O.probe); break;
        case o_window: bad = opt_int("--window", optarg, 1, 1000000, &O.window); break;
        case o_senders: bad = opt_int("--senders", optarg, 1, 10000000, &O.senders); break;
        case o_group_size: bad = opt_int("--group-size", optarg, 1, 10000000, &O.group_size); break;
        case o_body: bad = opt_int("--body", optarg, 24, 16000, &O.body_size); break;
        case o_hold: bad = opt_secs("--hold", optarg, 0, 0, 1e6, &O.hold); break;
        case o_offline: bad = opt_secs("--offline", optarg, 0, 0, 1e6, &O.offline); break;
        case o_resume:
            if (!strcmp(optarg, "auth")) O.resume = RESUME_AUTH;
            else if (!strcmp(optarg, "sync")) O.resume = RESUME_SYNC;
            else {
                fprintf(stderr, "parley-bench: --resume auth or sync\n");
                return -1;
            }
            break;
        case o_no_idle_convs: O.idle_convs = 0; break;
        case o_connect_conc: bad = opt_int("--connect-conc", optarg, 1, 10000000, &O.connect_conc); break;
        case o_reconnect_conc: bad = opt_int("--reconnect-conc", optarg, 0, 10000000, &O.reconnect_conc); break;
        case o_http_conc: bad = opt_int("--http-conc", optarg, 1, 100000, &O.http_conc); break;
        case o_tls:
            O.tls = 1;
            if (pb_tls_init() != 0) {
                fprintf(stderr, "parley-bench: cannot set up TLS\n");
                return -1;
            }
            break;
        case o_timeout: bad = opt_secs("--timeout", optarg, 0, 1, 1e6, &O.timeout); break;
        case o_server: snprintf(O.server, sizeof O.server, "%s", optarg); break;
        case o_server_pid: {
            char tmp[4096];
            snprintf(tmp, sizeof tmp, "%s", optarg);
            O.nserver_pids = 0;
            for (char *t = strtok(tmp, ", "); t; t = strtok(NULL, ", ")) {
                if (O.nserver_pids == PB_MAX_SERVERS) {
                    fprintf(stderr, "parley-bench: --server-pid: up to %d positive pids, comma-separated\n",
                            PB_MAX_SERVERS);
                    return -1;
                }
                if (opt_int("--server-pid", t, 1, INT_MAX, &O.server_pids[O.nserver_pids]) != 0) return -1;
                O.nserver_pids++;
            }
            break;
        }
        case o_parleyd: snprintf(O.parleyd, sizeof O.parleyd, "%s", optarg); break;
        case o_server_args: snprintf(O.server_args, sizeof O.server_args, "%s", optarg); break;
        case o_json: snprintf(O.json_path, sizeof O.json_path, "%s", optarg); break;
        case o_label: snprintf(O.label, sizeof O.label, "%s", optarg); break;
        case o_keep: O.keep_data = 1; break;
        default: usage(stderr); return -1;
        }
    }
    if (bad) return -1;
    if (O.rate < 0) {
        O.rate = O.wl == WL_STORM ? 2000 : 0;
        if (O.rate_frac > 0) O.rate = 0;
    }
    if (O.clients < 1 || O.addrs < 1 || O.addrs > 250 || O.per_worker < 1 || O.window < 1 ||
        O.body_size < 24 || O.body_size > 16000 || O.connect_conc < 1 || O.http_conc < 1 ||
        O.duration <= 0 || O.timeout <= 0 || O.workers < 0) {
        fprintf(stderr, "parley-bench: an option is out of range (see --help)\n");
        return -1;
    }
    if ((O.wl == WL_DM || (O.wl == WL_IDLE && O.idle_convs)) && O.clients < 2) O.clients = 2;
    return 0;
}

#define VLOG(...) do { if (O.verbose) { fprintf(stderr, "parley-bench: " __VA_ARGS__); fputc('\n', stderr); } } while (0)

/* ---- the server ------------------------------------------------------------- */

/* The number after the line starting with key in /proc/PID/FILE, or -1. */
static long proc_value(int pid, const char *file, const char *key) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl)) v = atol(line + kl);
    fclose(f);
    return v;
}

static long proc_rss_kib(int pid) { return proc_value(pid, "status", "VmRSS:"); }

/* The machine's kernel memory as the idle run sees it: slab (socket
 * structures, their inodes and dentries live there) and TCP buffer pages
 * (/proc/net/sockstat). Machine-wide: other processes move it too. */
typedef struct kmem { long slab_kib, tcp_inuse, tcp_mem_pages; } kmem;

static void kmem_take(kmem *k) {
    k->slab_kib = -1;
    k->tcp_inuse = k->tcp_mem_pages = -1;
    char line[256];
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "Slab:", 5)) k->slab_kib = atol(line + 5);
        fclose(f);
    }
    f = fopen("/proc/net/sockstat", "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            long inuse, orphan, tw, alloc, mem;
            if (sscanf(line, "TCP: inuse %ld orphan %ld tw %ld alloc %ld mem %ld", &inuse, &orphan, &tw, &alloc,
                       &mem) == 5) {
                k->tcp_inuse = inuse;
                k->tcp_mem_pages = mem;
            }
        }
        fclose(f);
    }
}

/* Descriptors process pid holds now. Linux 6.2 and later give the count
 * as the size of /proc/PID/fd (a count of the descriptor bitmap); older
 * kernels give 0 and the directory is read instead, one entry and one
 * dentry lookup per descriptor: ~15 ms of CPU at 19,000 descriptors, which
 * every 100 ms took 15 % of a core from the storm it was measuring. */
static int proc_fd_count(int pid) {
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    if (stat(path, &st) == 0 && st.st_size > 0) return (int)st.st_size;
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* Descriptors server i (spids[i]) holds now; keeps its high-water mark. */
static int proc_fds(int i) {
    int n = proc_fd_count(spids[i]);
    if (n < 0) return -1;
    if (n > fds_max_of[i]) fds_max_of[i] = n;
    if (n > fds_max) fds_max = n;
    return n;
}

/* Called every ~100 ms while waiting: samples one server's descriptors (a
 * different one each time: on a kernel without the cheap count, reading
 * /proc/PID/fd of a process holding 20,000 costs ~15 ms, and the bench
 * shares the CPUs with the servers). */
static void poll_fds(void) {
    if (!nspids) return;
    proc_fds(fds_poll_next++ % nspids);
}

static int proc_fd_limit(int pid) { return (int)proc_value(pid, "limits", "Max open files"); }

/* CPU ticks per thread of pid (tid -> utime + stime) into tids/ticks;
 * returns how many (at most max). */
static int proc_thread_ticks(int pid, int *tids, long *ticks, long *waits, int max) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        if (e->d_name[0] == '.') continue;
        char sp[300], buf[1024];
        snprintf(sp, sizeof sp, "/proc/%d/task/%s/stat", pid, e->d_name);
        FILE *f = fopen(sp, "r");
        if (!f) continue;
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = '\0';
        char *p = strrchr(buf, ')');          /* fields after the command name */
        if (!p) continue;
        long ut = 0, st = 0;
        /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut, &st) != 2) continue;
        tids[n] = atoi(e->d_name);
        ticks[n] = ut + st;
        /* schedstat: ns on a CPU, ns runnable but waiting for one, slices */
        snprintf(sp, sizeof sp, "/proc/%d/task/%s/schedstat", pid, e->d_name);
        waits[n] = 0;
        f = fopen(sp, "r");
        if (f) {
            long long run_ns = 0, wait_ns = 0;
            if (fscanf(f, "%lld %lld", &run_ns, &wait_ns) == 2) waits[n] = (long)(wait_ns / 1000000);
            fclose(f);
        }
        n++;
    }
    closedir(d);
    return n;
}

typedef struct cpu_snap {
    int     n;
    int     tids[64];
    long    ticks[64];      /* server threads: CPU ticks              */
    long    waits[64];      /* ... ms runnable without a CPU          */
    long    sys_busy;       /* whole machine (/proc/stat), ticks      */
    long    server_ticks;   /* the whole server process               */
    int64_t t;
} cpu_snap;

static void cpu_snap_take(int pid, cpu_snap *s) {
    s->n = pid ? proc_thread_ticks(pid, s->tids, s->ticks, s->waits, 64) : 0;
    s->server_ticks = 0;
    for (int i = 0; i < s->n; i++) s->server_ticks += s->ticks[i];
    s->sys_busy = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        long v[8] = {0};
        if (fscanf(f, "cpu %ld %ld %ld %ld %ld %ld %ld %ld", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                   &v[7]) == 8)
            s->sys_busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];   /* all but idle and iowait */
        fclose(f);
    }
    s->t = pb_now();
}

/* Per-thread CPU of the server between two snapshots, in % of one core:
 * {"loop_pct": main thread, "threads_pct": [the others, busiest first],
 *  "loop_wait_pct": time the main thread was runnable but had no CPU (a
 *  busy machine starves it: the figures are then a lower bound)}. */
static json_t *cpu_snap_json(int pid, const cpu_snap *a, const cpu_snap *b) {
    double secs = (double)(b->t - a->t) / 1e9, hz = (double)sysconf(_SC_CLK_TCK);
    double loop = 0, loop_wait = 0, other[64], other_wait = 0;
    int no = 0;
    for (int i = 0; i < b->n; i++) {
        long before = 0, wbefore = 0;
        for (int k = 0; k < a->n; k++)
            if (a->tids[k] == b->tids[i]) {
                before = a->ticks[k];
                wbefore = a->waits[k];
            }
        double pct = secs > 0 ? 100.0 * (double)(b->ticks[i] - before) / hz / secs : 0;
        double wpct = secs > 0 ? 100.0 * (double)(b->waits[i] - wbefore) / 1000.0 / secs : 0;
        if (b->tids[i] == pid) {
            loop = pct;
            loop_wait = wpct;
        } else {
            other[no++] = pct;
            if (wpct > other_wait) other_wait = wpct;
        }
    }
    for (int i = 0; i < no; i++)              /* busiest first */
        for (int k = i + 1; k < no; k++)
            if (other[k] > other[i]) { double t = other[i]; other[i] = other[k]; other[k] = t; }
    json_t *arr = json_array();
    for (int i = 0; i < no && i < 8; i++) json_array_append_new(arr, json_real(other[i]));
    double machine = secs > 0 ? 100.0 * (double)(b->sys_busy - a->sys_busy) / hz / secs : 0;
    double server = secs > 0 ? 100.0 * (double)(b->server_ticks - a->server_ticks) / hz / secs : 0;
    return json_pack("{s:f,s:f,s:o,s:f,s:f,s:f,s:f,s:i}", "loop_pct", loop, "loop_wait_pct", loop_wait, "threads_pct",
                     arr, "threads_max_wait_pct", other_wait, "server_pct", server, "machine_busy_pct", machine,
                     "seconds", secs, "cpus", (int)sysconf(_SC_NPROCESSORS_ONLN));
}

typedef struct cpu_snaps { cpu_snap s[PB_MAX_SERVERS]; } cpu_snaps;

static void cpu_snaps_take(cpu_snaps *c) {
    for (int i = 0; i < nspids; i++) cpu_snap_take(spids[i], &c->s[i]);
}

/* The servers' CPU between two snapshots: one server's cpu_snap_json(); for
 * several, their sum (server_pct), the busiest loop thread (loop_pct,
 * loop_wait_pct) and each one's figures in per_server. */
static json_t *cpu_snaps_json(const cpu_snaps *a, const cpu_snaps *b) {
    if (nspids == 1) return cpu_snap_json(spids[0], &a->s[0], &b->s[0]);
    json_t *per = json_array();
    double sum = 0, loop = 0, loop_wait = 0, machine = 0, secs = 0;
    for (int i = 0; i < nspids; i++) {
        json_t *one = cpu_snap_json(spids[i], &a->s[i], &b->s[i]);
        json_object_set_new(one, "pid", json_integer(spids[i]));
        sum += json_real_value(json_object_get(one, "server_pct"));
        double l = json_real_value(json_object_get(one, "loop_pct"));
        double w = json_real_value(json_object_get(one, "loop_wait_pct"));
        if (l > loop) loop = l;
        if (w > loop_wait) loop_wait = w;
        machine = json_real_value(json_object_get(one, "machine_busy_pct"));
        secs = json_real_value(json_object_get(one, "seconds"));
        json_array_append_new(per, one);
    }
    return json_pack("{s:i,s:f,s:f,s:f,s:f,s:f,s:i,s:o}", "servers", nspids, "server_pct", sum, "loop_pct", loop,
                     "loop_wait_pct", loop_wait, "machine_busy_pct", machine, "seconds", secs, "cpus",
                     (int)sysconf(_SC_NPROCESSORS_ONLN), "per_server", per);
}

/* An external server's process still runs (not a zombie). */
static int pid_running(int pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = '\0';
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* Notices a server that died on its own: the embedded one (reaped here), or
 * one of --server-pid's processes. */
static int server_alive(void) {
    if (server_died) return 0;
    if (!server_pid) {
        for (int i = 0; i < nspids; i++)
            if (!pid_running(spids[i])) {
                server_died = 1;
                snprintf(server_exit, sizeof server_exit, "pid %d (--server-pid) EXITED during the run", spids[i]);
                return 0;
            }
        return 1;
    }
    int st;
    pid_t r = waitpid(server_pid, &st, WNOHANG);
    if (r == server_pid) {
        server_died = 1;
        if (WIFSIGNALED(st)) snprintf(server_exit, sizeof server_exit, "CRASHED: killed by signal %d", WTERMSIG(st));
        else snprintf(server_exit, sizeof server_exit, "EXITED on its own with status %d", WEXITSTATUS(st));
        return 0;
    }
    return 1;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(0x7f000001);
    socklen_t l = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void default_parleyd(char *out, size_t n) {
    const char *env = getenv("PARLEYD_RELEASE");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return;
    }
    char self[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k <= 0) {
        snprintf(out, n, "parleyd");
        return;
    }
    self[k] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) *slash = '\0';
    if (strlen(self) + 9 > n) {
        snprintf(out, n, "parleyd");
        return;
    }
    memcpy(out, self, strlen(self));
    memcpy(out + strlen(self), "/parleyd", 9);
}

static int start_server(void) {
    if (!O.parleyd[0]) default_parleyd(O.parleyd, sizeof O.parleyd);
    if (access(O.parleyd, X_OK) != 0) {
        fprintf(stderr, "parley-bench: cannot run %s (build it with `make`, or pass --parleyd / --server)\n", O.parleyd);
        return -1;
    }
    snprintf(scratch, sizeof scratch, "/tmp/parley-bench-XXXXXX");
    if (!mkdtemp(scratch)) {
        perror("parley-bench: mkdtemp");
        return -1;
    }
    P.port = free_port();
    snprintf(P.host, sizeof P.host, "127.0.0.1");
    char listen[64], data[PATH_MAX + 8], logp[PATH_MAX + 16];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", P.port);
    snprintf(data, sizeof data, "%s/data", scratch);
    snprintf(logp, sizeof logp, "%s/parleyd.log", scratch);
    char *args[64];
    int na = 0;
    args[na++] = O.parleyd;
    args[na++] = "--listen";
    args[na++] = listen;
    args[na++] = "--data-dir";
    args[na++] = data;
    args[na++] = "--argon2-ops";
    args[na++] = "1";
    args[na++] = "--argon2-mem";
    args[na++] = "64";
    args[na++] = "--log-level";
    args[na++] = "warn";
    /* The bench measures capacity, so the per-user and per-conversation
     * message limits (P2) are lifted when this parleyd has them; extra
     * --server-args come later and win. */
    char help_cmd[PATH_MAX + 32], help[16384] = "";
    snprintf(help_cmd, sizeof help_cmd, "'%s' --help 2>&1", O.parleyd);
    FILE *hp = popen(help_cmd, "r");
    if (hp) {
        size_t hn = fread(help, 1, sizeof help - 1, hp);
        help[hn] = '\0';
        pclose(hp);
    }
    /* A handful of bench connections each carry thousands of messages a
     * second (no real client does), so the slow-consumer bound (P3) gets
     * room for a scheduling hiccup of the bench: 64 MiB instead of 1 MiB. */
    static const char *const relaxed[][2] = {
        {"--rate-user-msgs", "0"}, {"--rate-conv-msgs", "0"}, {"--rate-workspace-msgs", "0"},
        {"--max-outbound", "67108864"}};
    for (size_t i = 0; i < sizeof relaxed / sizeof *relaxed; i++) {
        if (!strstr(help, relaxed[i][0])) continue;
        args[na++] = (char *)relaxed[i][0];
        args[na++] = (char *)relaxed[i][1];
    }
    char extra[sizeof O.server_args];
    snprintf(extra, sizeof extra, "%s", O.server_args);
    for (char *t = strtok(extra, " "); t && na < 62; t = strtok(NULL, " ")) args[na++] = t;
    args[na] = NULL;
    for (int i = 0; i < na; i++) {
        size_t l = strlen(server_cmd);
        snprintf(server_cmd + l, sizeof server_cmd - l, "%s%s", i ? " " : "", args[i]);
    }
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(O.parleyd, args);
        _exit(127);
    }
    server_pid = pid;
    P.nservers = 1;
    P.servers[0].port = P.port;
    snprintf(P.servers[0].host, sizeof P.servers[0].host, "%s", P.host);
    spids[0] = pid;
    nspids = 1;
    if (pb_wait_healthy(P.host, P.port, 15) != 0) {
        fprintf(stderr, "parley-bench: %s did not become healthy (log: %s)\n", O.parleyd, logp);
        return -1;
    }
    VLOG("parleyd pid %d on %s, data in %s", pid, listen, scratch);
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static void print_log_tail(void) {
    char logp[PATH_MAX + 16], cmd[PATH_MAX + 64];
    snprintf(logp, sizeof logp, "%s/parleyd.log", scratch);
    fprintf(stderr, "parley-bench: the server log is kept in %s; its tail:\n", logp);
    snprintf(cmd, sizeof cmd, "tail -n 20 '%s' >&2", logp);
    if (system(cmd) != 0) { /* nothing more to show */ }
}

static void stop_server(int keep) {
    if (!server_pid) return;
    if (server_alive()) {
        kill(server_pid, SIGTERM);
        int st = 0;
        for (int i = 0; i < 200; i++) {
            if (waitpid(server_pid, &st, WNOHANG) == server_pid) break;
            usleep(50000);
            if (i == 199) {
                kill(server_pid, SIGKILL);
                waitpid(server_pid, &st, 0);
                snprintf(server_exit, sizeof server_exit, "did not stop within 10 s of SIGTERM (killed)");
                keep = 1;
            }
        }
        if (strcmp(server_exit, "running") == 0) {
            if (WIFEXITED(st) && WEXITSTATUS(st) == 0) snprintf(server_exit, sizeof server_exit, "clean exit after SIGTERM");
            else {
                snprintf(server_exit, sizeof server_exit, "exit after SIGTERM: status %d signal %d",
                         WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
                keep = 1;
            }
        }
    } else {
        keep = 1;
    }
    if (keep) print_log_tail();
    if (!keep && !O.keep_data && scratch[0]) nftw(scratch, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- workers ---------------------------------------------------------------- */

static void send_cmd(int w, json_t *cmd) {
    char *s = json_dumps(cmd, JSON_COMPACT);
    size_t n = strlen(s);
    s = pl_realloc(s, n + 2);
    s[n] = '\n';
    size_t off = 0;
    while (off < n + 1) {
        ssize_t k = write(WP[w].cmd, s + off, n + 1 - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        off += (size_t)k;
    }
    free(s);
}

static void broadcast(json_t *cmd) {
    for (int w = 0; w < P.nworkers; w++) send_cmd(w, cmd);
    json_decref(cmd);
}

/* Waits until every worker has reported `ev`; the reports are left in
 * WP[w].msg. Returns 0, or -1 on a timeout, a dead worker or a dead server. */
static int wait_all(const char *ev, double timeout_s) {
    for (int w = 0; w < P.nworkers; w++) {
        json_decref(WP[w].msg);
        WP[w].msg = NULL;
    }
    int64_t deadline = pb_now() + (int64_t)(timeout_s * 1e9);
    int have = 0;
    struct pollfd *pf = pl_calloc((size_t)P.nworkers, sizeof *pf);
    while (have < P.nworkers) {
        if (pb_now() > deadline) {
            fprintf(stderr, "parley-bench: timed out waiting for `%s` (%d of %d workers)\n", ev, have, P.nworkers);
            free(pf);
            return -1;
        }
        if (!server_alive()) {
            fprintf(stderr, "parley-bench: the server died while waiting for `%s`: %s\n", ev, server_exit);
            free(pf);
            return -1;
        }
        poll_fds();
        for (int w = 0; w < P.nworkers; w++) {
            pf[w].fd = WP[w].rep;
            pf[w].events = POLLIN;
        }
        if (poll(pf, (nfds_t)P.nworkers, 100) <= 0) continue;
        for (int w = 0; w < P.nworkers; w++) {
            if (!(pf[w].revents & (POLLIN | POLLHUP))) continue;
            wproc *x = &WP[w];
            if (x->cap - x->len < 65536) {
                x->cap = x->cap ? x->cap * 2 : 262144;
                x->buf = pl_realloc(x->buf, x->cap);
            }
            ssize_t k = read(x->rep, x->buf + x->len, x->cap - x->len);
            if (k <= 0) {
                fprintf(stderr, "parley-bench: worker %d exited unexpectedly while waiting for `%s`\n", w, ev);
                free(pf);
                return -1;
            }
            x->len += (size_t)k;
            char *nl;
            while ((nl = memchr(x->buf, '\n', x->len))) {
                size_t line = (size_t)(nl - x->buf);
                json_t *j = json_loadb(x->buf, line, 0, NULL);
                memmove(x->buf, nl + 1, x->len - line - 1);
                x->len -= line + 1;
                const char *got = json_string_value(json_object_get(j, "ev"));
                if (got && !strcmp(got, ev) && !x->msg) {
                    x->msg = j;
                    have++;
                } else {
                    fprintf(stderr, "parley-bench: worker %d sent `%s` while waiting for `%s`\n", w,
                            got ? got : "?", ev);
                    json_decref(j);
                }
            }
        }
    }
    free(pf);
    return 0;
}

static int64_t sum_i(const char *key) {
    int64_t s = 0;
    for (int w = 0; w < P.nworkers; w++) s += json_integer_value(json_object_get(WP[w].msg, key));
    return s;
}

static void merge_hdr(pb_hdr *h, const char *key) {
    pb_hdr_reset(h);
    for (int w = 0; w < P.nworkers; w++) {
        const char *s = json_string_value(json_object_get(WP[w].msg, key));
        if (s && *s) pb_hdr_parse(h, s);
    }
}

static void merge_counts(json_t *into, const char *key) {
    for (int w = 0; w < P.nworkers; w++) {
        json_t *o = json_object_get(WP[w].msg, key);
        const char *k;
        json_t *v;
        json_object_foreach(o, k, v) {
            json_t *cur = json_object_get(into, k);
            json_object_set_new(into, k, json_integer(json_integer_value(cur) + json_integer_value(v)));
        }
    }
}

static const char *first_error(void) {
    for (int w = 0; w < P.nworkers; w++) {
        const char *s = json_string_value(json_object_get(WP[w].msg, "first_error"));
        if (s && *s) return s;
    }
    return "";
}

static int fork_workers(void) {
    WP = pl_calloc((size_t)P.nworkers, sizeof *WP);
    fflush(NULL);
    for (int w = 0; w < P.nworkers; w++) {
        int c[2], r[2];
        if (pipe2(c, O_CLOEXEC) || pipe2(r, O_CLOEXEC)) return -1;
        pid_t pid = fork();
        if (pid < 0) return -1;
        if (pid == 0) {
            close(c[1]);
            close(r[0]);
            for (int k = 0; k < w; k++) {      /* siblings' pipes are not ours */
                close(WP[k].cmd);
                close(WP[k].rep);
            }
            pb_worker_main(&O, &P, w, c[0], r[1]);
        }
        close(c[0]);
        close(r[1]);
        WP[w].pid = pid;
        WP[w].cmd = c[1];
        WP[w].rep = r[0];
    }
    return 0;
}

static void end_workers(void) {
    if (!WP) return;
    json_t *q = json_pack("{s:s}", "cmd", "quit");
    broadcast(q);
    for (int w = 0; w < P.nworkers; w++) {
        close(WP[w].cmd);
        int st;
        for (int i = 0; i < 100 && waitpid(WP[w].pid, &st, WNOHANG) == 0; i++) usleep(50000);
        if (waitpid(WP[w].pid, &st, WNOHANG) == 0) {
            kill(WP[w].pid, SIGKILL);
            waitpid(WP[w].pid, &st, 0);
        }
    }
}

/* ---- phases ----------------------------------------------------------------- */

static void sleep_until(int64_t t) {
    for (;;) {
        int64_t d = t - pb_now();
        if (d <= 0) return;
        if (!server_alive()) return;
        poll_fds();
        struct timespec ts = {0, d > 100000000 ? 100000000 : d};
        nanosleep(&ts, NULL);
    }
}

/* Senders per worker, to split a total rate. */
static int senders_in(int w) {
    int n = 0;
    for (int i = P.lo[w]; i < P.hi[w]; i++)
        if (P.c[i].role == ROLE_SEND || P.c[i].role == ROLE_FEEDER) n++;
    return n;
}

/* One run: returns its measured window counts (win_acked, win_deliveries)
 * through out, -1 on failure. */
static cpu_snaps cpu_a, cpu_b;     /* server threads around the last run */
static int       cpu_taken;        /* cpu_b holds a snapshot             */
static double   bench_cpu_s;       /* workers' CPU over the last run     */
static double   bench_wall_s;      /* ... and its wall-clock length       */
static json_t  *timeline;          /* merged 250 ms timeline of the last run */

/* Merges one pair of worker timeline arrays: counts summed, latencies
 * (us) maxed into ms. */
static void merge_tl(const char *ck, const char *lk, json_t **counts, json_t **worst_ms) {
    *counts = json_array();
    *worst_ms = json_array();
    for (size_t i = 0;; i++) {
        int any = 0;
        json_int_t sum = 0, worst = 0;
        for (int w = 0; w < P.nworkers; w++) {
            json_t *a = json_object_get(WP[w].msg, ck), *b = json_object_get(WP[w].msg, lk);
            if (i >= json_array_size(a)) continue;
            any = 1;
            sum += json_integer_value(json_array_get(a, i));
            json_int_t v = json_integer_value(json_array_get(b, i));
            if (v > worst) worst = v;
        }
        if (!any) break;
        json_array_append_new(*counts, json_integer(sum));
        json_array_append_new(*worst_ms, json_real((double)worst / 1000.0));
    }
}

/* The run's timeline, from t0 in 250 ms buckets: deliveries and acks per
 * bucket and the worst send-to-receive / send-to-ack latency seen in each.
 * A bucket with no acks and no deliveries in the middle of a run is a
 * stall; acks continuing while deliveries stop points at fan-out rather
 * than commits. */
static void merge_timeline(void) {
    json_t *d, *mx, *a, *ax;
    merge_tl("tl_deliv", "tl_maxlat_us", &d, &mx);
    merge_tl("tl_acks", "tl_maxack_us", &a, &ax);
    json_decref(timeline);
    timeline = json_pack("{s:i,s:o,s:o,s:o,s:o}", "bucket_ms", 250, "deliveries", d, "max_latency_ms", mx,
                         "acks", a, "max_ack_ms", ax);
}

static int do_run(double rate, double warmup, double seconds, double *msgs_s, double *deliv_s) {
    int total = 0;
    for (int w = 0; w < P.nworkers; w++) total += senders_in(w);
    int64_t t0 = pb_now() + 100000000;
    int64_t measure = t0 + (int64_t)(warmup * 1e9), end = measure + (int64_t)(seconds * 1e9);
    for (int w = 0; w < P.nworkers; w++) {
        double wr = rate > 0 && total ? rate * senders_in(w) / total : 0;
        json_t *cmd = json_pack("{s:s,s:I,s:I,s:I,s:f,s:i}", "cmd", "run", "t0", (json_int_t)t0,
                                "measure", (json_int_t)measure, "end", (json_int_t)end, "rate", wr, "window",
                                O.window);
        send_cmd(w, cmd);
        json_decref(cmd);
    }
    VLOG("run: rate %s%.0f for %.1f s after %.1f s warm-up", rate > 0 ? "" : "max ", rate, seconds, warmup);
    sleep_until(measure);
    cpu_snaps_take(&cpu_a);
    sleep_until(end);
    cpu_snaps_take(&cpu_b);
    cpu_taken = 1;
    broadcast(json_pack("{s:s}", "cmd", "stop"));
    if (wait_all("stopped", O.timeout + 15) != 0) return -1;
    bench_cpu_s = 0;
    for (int w = 0; w < P.nworkers; w++) bench_cpu_s += json_real_value(json_object_get(WP[w].msg, "cpu_s"));
    bench_wall_s = (double)(pb_now() - t0) / 1e9;
    merge_timeline();
    *msgs_s = (double)sum_i("win_acked") / seconds;
    *deliv_s = (double)sum_i("win_deliveries") / seconds;
    VLOG("run done: %.0f msg/s acked, %.0f deliveries/s", *msgs_s, *deliv_s);
    return 0;
}

static void now_iso(char *out, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *wl_name(void) {
    static const char *const names[] = {"idle", "dm", "group", "storm"};
    return names[O.wl];
}

/* --server's list into P.servers: HOST:PORT, HOST a numeric IPv4 address or
 * a name resolved here to its first IPv4 address (localhost included). */
static int parse_servers(void) {
    char tmp[sizeof O.server];
    snprintf(tmp, sizeof tmp, "%s", O.server);
    P.nservers = 0;
    for (char *t = strtok(tmp, ", "); t; t = strtok(NULL, ", ")) {
        char *colon = strrchr(t, ':');
        int port = 0;
        if (P.nservers == PB_MAX_SERVERS || !colon || colon == t) {
            fprintf(stderr, "parley-bench: --server HOST:PORT[,HOST:PORT...] (up to %d)\n", PB_MAX_SERVERS);
            return -1;
        }
        char *pend;
        long pv = colon[1] >= '0' && colon[1] <= '9' ? strtol(colon + 1, &pend, 10) : 0;
        if (colon[1] < '0' || colon[1] > '9' || *pend || pv < 1 || pv > 65535) {
            fprintf(stderr, "parley-bench: --server %s: the port must be an integer in [1, 65535]\n", t);
            return -1;
        }
        port = (int)pv;
        struct pb_server *sv = &P.servers[P.nservers];
        char host[256];
        snprintf(host, sizeof host, "%.*s", (int)(colon - t), t);
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
        int gai = getaddrinfo(host, NULL, &hints, &ai);
        if (gai != 0 || !ai) {
            fprintf(stderr, "parley-bench: --server %s: the host %s has no IPv4 address (%s)\n", t, host,
                    gai ? gai_strerror(gai) : "none");
            return -1;
        }
        inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, sv->host, sizeof sv->host);
        freeaddrinfo(ai);
        sv->port = port;
        P.nservers++;
    }
    if (!P.nservers) {
        fprintf(stderr, "parley-bench: --server HOST:PORT[,HOST:PORT...]\n");
        return -1;
    }
    snprintf(P.host, sizeof P.host, "%s", P.servers[0].host);
    P.port = P.servers[0].port;
    return 0;
}

/* Sum over the measured servers of proc_rss_kib, each also stored in per[]
 * (when per is not NULL); -1 when there is none. */
static long rss_all(long *per) {
    if (!nspids) return -1;
    long sum = 0;
    for (int i = 0; i < nspids; i++) {
        long v = proc_rss_kib(spids[i]);
        if (per) per[i] = v;
        if (v > 0) sum += v;
    }
    return sum;
}

int main(int argc, char **argv) {
    int r = parse_opts(argc, argv);
    if (r) return r > 0 ? 0 : 2;
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    json_t *res = json_object();
    json_t *probs = json_array();
    char date[32];
    now_iso(date, sizeof date);
    json_object_set_new(res, "tool", json_string("parley-bench"));
    json_object_set_new(res, "workload", json_string(wl_name()));
    json_object_set_new(res, "label", json_string(O.label));
    json_object_set_new(res, "date", json_string(date));
    json_object_set_new(res, "machine", pb_machine_json());
    int failed_run = 0;

    /* the server */
    if (O.server[0]) {
        if (parse_servers() != 0) return 2;
        for (int k = 0; k < P.nservers; k++)
            if (pb_wait_healthy(P.servers[k].host, P.servers[k].port, 5) != 0) {
                fprintf(stderr, "parley-bench: %s:%d does not answer /healthz\n", P.servers[k].host,
                        P.servers[k].port);
                return 1;
            }
        for (int i = 0; i < O.nserver_pids; i++) spids[nspids++] = O.server_pids[i];
        for (int i = 0; i < nspids; i++)
            if (!pid_running(spids[i])) {
                fprintf(stderr, "parley-bench: --server-pid %d: no such process\n", spids[i]);
                return 2;
            }
    } else if (start_server() != 0) {
        stop_server(1);
        return 1;
    }
    int spid = nspids ? spids[0] : 0;
    long long drops0 = -1;
    {
        json_t *m = json_object_get(res, "machine");
        json_object_set_new(m, "loadavg_start", pb_loadavg_json());
        drops0 = pb_listen_drops();
        json_object_set_new(m, "fdatasync_ms", pb_fsync_probe(scratch[0] ? scratch : "/tmp", 100));
    }
    uint32_t seed = (uint32_t)(pb_now() ^ getpid());
    snprintf(P.runid, sizeof P.runid, "pb%06x", seed & 0xffffff);

    /* setup */
    VLOG("setup: registering users and creating conversations");
    json_t *setup = NULL;
    if (pb_setup(&O, &P, &setup) != 0) {
        stop_server(1);
        return 1;
    }
    json_object_set_new(res, "setup", setup);
    VLOG("setup done: %d users in %.2f s", P.nclients, json_real_value(json_object_get(setup, "register_s")));

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    int biggest = 0;
    for (int w = 0; w < P.nworkers; w++)
        if (P.hi[w] - P.lo[w] > biggest) biggest = P.hi[w] - P.lo[w];
    if ((rlim_t)biggest + 64 > rl.rlim_cur) {
        fprintf(stderr, "parley-bench: %d connections in one worker exceed the fd limit %ld: use --workers\n",
                biggest, (long)rl.rlim_cur);
        stop_server(0);
        return 2;
    }
    json_object_set_new(res, "params",
        json_pack("{s:i,s:i,s:i,s:f,s:f,s:f,s:f,s:f,s:i,s:i,s:i,s:i,s:f,s:f,s:s,s:i,s:i}",
                  "clients", P.nclients, "workers", P.nworkers, "addrs", O.addrs, "duration", O.duration,
                  "warmup", O.warmup, "rate", O.rate, "rate_frac", O.rate_frac, "probe", O.probe,
                  "window", O.window, "senders", O.senders, "group_size", O.group_size, "body", O.body_size,
                  "hold", O.hold, "offline", O.offline, "resume", O.resume == RESUME_AUTH ? "auth" : "sync",
                  "connect_conc", O.connect_conc, "idle_convs", O.idle_convs));
    json_object_set_new(json_object_get(res, "params"), "reconnect_conc", json_integer(O.reconnect_conc));
    json_object_set_new(json_object_get(res, "params"), "tls", json_boolean(O.tls));
    {
        json_t *sl = json_array();
        for (int k = 0; k < P.nservers; k++)
            json_array_append_new(sl, json_sprintf("%s:%d", P.servers[k].host, P.servers[k].port));
        json_object_set_new(json_object_get(res, "params"), "servers", sl);
    }

    /* server memory and descriptors before any WebSocket */
    long rss_before_of[PB_MAX_SERVERS], rss_conn_of[PB_MAX_SERVERS], rss_after_of[PB_MAX_SERVERS];
    int fds_before_of[PB_MAX_SERVERS], fds_after_of[PB_MAX_SERVERS];
    long rss_before = rss_all(rss_before_of);
    kmem kbefore, kafter;
    kmem_take(&kbefore);
    for (int i = 0; i < nspids; i++) fds_before_of[i] = proc_fds(i);

    /* connect */
    int64_t tc = pb_now();
    if (fork_workers() != 0) {
        perror("parley-bench: fork");
        stop_server(1);
        return 1;
    }
    VLOG("%d workers connecting %d clients", P.nworkers, P.nclients);
    if (wait_all("connected", 60 + P.nclients / 200.0) != 0) {
        failed_run = 1;
        goto out;
    }
    double conn_s = (double)(pb_now() - tc) / 1e9;
    int64_t connected = sum_i("connected"), cfailed = sum_i("failed");
    pb_hdr hconn;
    merge_hdr(&hconn, "conn");
    json_t *reasons = json_object();
    merge_counts(reasons, "fail_reasons");
    json_object_set_new(res, "connect",
        json_pack("{s:i,s:I,s:I,s:o,s:s,s:f,s:f,s:o}", "attempted", P.nclients, "connected", (json_int_t)connected,
                  "failed", (json_int_t)cfailed, "fail_reasons", reasons, "first_error", first_error(),
                  "seconds", conn_s, "per_s", conn_s > 0 ? connected / conn_s : 0.0, "handshake_ms",
                  pb_pct_json(&hconn)));
    if (P.nservers > 1) {          /* where the clients went, by --server address */
        json_t *per = json_array();
        for (int k = 0; k < P.nservers; k++) {
            json_int_t n = 0;
            for (int w = 0; w < P.nworkers; w++)
                n += json_integer_value(json_array_get(json_object_get(WP[w].msg, "per_server"), (size_t)k));
            json_array_append_new(per, json_integer(n));
        }
        json_object_set_new(json_object_get(res, "connect"), "per_server", per);
    }
    {                              /* which node took them, behind a balancer */
        json_t *nodes = json_object();
        merge_counts(nodes, "nodes");
        if (json_object_size(nodes)) json_object_set_new(json_object_get(res, "connect"), "nodes", nodes);
        else json_decref(nodes);
    }
    VLOG("connected %lld of %d in %.2f s", (long long)connected, P.nclients, conn_s);
    {
        /* the ceiling: a server at its descriptor limit (the fullest one) */
        int sfds = -1, slim = -1, full = -1;
        for (int i = 0; i < nspids; i++) {
            int n = proc_fds(i), lim = proc_fd_limit(spids[i]);
            if (full < 0 || (lim > 0 && fds_max_of[i] - lim > fds_max_of[full] - slim)) {
                full = i;
                sfds = n;
                slim = lim;
            }
        }
        int fmax = full >= 0 ? fds_max_of[full] : 0;
        int hit = cfailed > 0 && slim > 0 && fmax >= slim - 32;
        char note[400] = "";
        if (hit && nspids > 1)
            snprintf(note, sizeof note,
                     "server pid %d ran out of file descriptors: it used %d of its %d; the %d servers hold %lld "
                     "connections; %lld more were closed or refused at accept. More connections need more "
                     "server processes.", spids[full], fmax, slim, nspids, (long long)connected,
                     (long long)cfailed);
        else if (hit)
            snprintf(note, sizeof note,
                     "the server ran out of file descriptors: it used %d of its %d and holds %lld connections; "
                     "%lld more were closed or refused at accept. More connections need more server "
                     "processes (cluster mode).", fmax, slim, (long long)connected, (long long)cfailed);
        else if (cfailed > 0)
            snprintf(note, sizeof note, "%lld connections failed (server fds %d of %d): %s", (long long)cfailed,
                     sfds, slim, first_error());
        json_object_set_new(res, "ceiling", json_pack("{s:b,s:I,s:i,s:i,s:s}", "hit", hit, "held",
                                                      (json_int_t)connected, "server_fds", fmax,
                                                      "server_fd_limit", slim, "note", note));
        if (hit) fprintf(stderr, "parley-bench: CEILING: %s\n", note);
        if (cfailed) json_array_append_new(probs, json_sprintf("%lld connections failed: %s", (long long)cfailed,
                                                               first_error()));
    }

    double msgs_s = 0, deliv_s = 0, run_s = O.duration, target = O.rate;
    if (O.wl == WL_IDLE) {
        usleep(500000);                          /* let the server settle */
        long rss_conn = rss_all(rss_conn_of);
        int64_t now = pb_now();
        broadcast(json_pack("{s:s,s:I,s:I,s:I,s:f,s:i}", "cmd", "run", "t0", (json_int_t)now, "measure",
                            (json_int_t)now, "end", (json_int_t)(now + (int64_t)(O.hold * 1e9)), "rate", 0.0,
                            "window", 1));
        sleep_until(now + (int64_t)(O.hold * 1e9));
        long rss_after = rss_all(rss_after_of);
        kmem_take(&kafter);
        for (int i = 0; i < nspids; i++) fds_after_of[i] = proc_fds(i);
        broadcast(json_pack("{s:s}", "cmd", "stop"));
        if (wait_all("stopped", O.timeout + 15) != 0) {
            failed_run = 1;
            goto out;
        }
        int64_t pinged = sum_i("pinged"), pongs = sum_i("pongs");
        double per = connected && rss_before > 0 ? (double)(rss_after - rss_before) * 1024.0 / (double)connected : 0;
        json_object_set_new(res, "idle",
            json_pack("{s:I,s:I,s:I,s:I,s:f,s:f,s:I,s:I}", "connections", (json_int_t)connected, "rss_before_kib",
                      (json_int_t)rss_before, "rss_connected_kib", (json_int_t)rss_conn, "rss_after_kib",
                      (json_int_t)rss_after, "bytes_per_conn", per, "hold_s", O.hold, "pinged",
                      (json_int_t)pinged, "pongs", (json_int_t)pongs));
        {
            /* both ends of each loopback connection are on this machine:
             * the kernel's share is per connection, client and server side */
            long ds = kafter.slab_kib - kbefore.slab_kib, dp = kafter.tcp_mem_pages - kbefore.tcp_mem_pages;
            double per_k = connected > 0 ? ((double)ds * 1024.0 + (double)dp * 4096.0) / (double)connected : 0;
            json_object_set_new(json_object_get(res, "idle"), "kernel",
                json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "slab_kib_before", (json_int_t)kbefore.slab_kib,
                          "slab_kib_after", (json_int_t)kafter.slab_kib, "tcp_inuse_before",
                          (json_int_t)kbefore.tcp_inuse, "tcp_inuse_after", (json_int_t)kafter.tcp_inuse,
                          "tcp_mem_pages_before", (json_int_t)kbefore.tcp_mem_pages, "tcp_mem_pages_after",
                          (json_int_t)kafter.tcp_mem_pages, "bytes_per_conn", per_k));
        }
        if (nspids > 1) {
            /* per process: its connections are the descriptors it gained
             * (the bench cannot tell which node a balancer chose) */
            json_t *pl = json_array();
            for (int i = 0; i < nspids; i++) {
                int conns = fds_after_of[i] - fds_before_of[i];
                double b = conns > 0 && rss_before_of[i] > 0
                               ? (double)(rss_after_of[i] - rss_before_of[i]) * 1024.0 / conns : 0;
                json_array_append_new(pl, json_pack("{s:i,s:I,s:I,s:I,s:i,s:i,s:i,s:f}", "pid", spids[i],
                    "rss_before_kib", (json_int_t)rss_before_of[i], "rss_connected_kib", (json_int_t)rss_conn_of[i],
                    "rss_after_kib", (json_int_t)rss_after_of[i], "fds_before", fds_before_of[i], "fds_after",
                    fds_after_of[i], "connections", conns, "bytes_per_conn", b));
            }
            json_object_set_new(json_object_get(res, "idle"), "per_server", pl);
        }
        if (pongs != pinged)
            json_array_append_new(probs, json_sprintf("%lld of %lld connections did not answer a ping",
                                                      (long long)(pinged - pongs), (long long)pinged));
    } else if (O.wl == WL_STORM) {
        int total = 0;
        for (int w = 0; w < P.nworkers; w++) total += senders_in(w);
        int64_t t0 = pb_now() + 100000000;
        int64_t drop = t0 + (int64_t)(O.warmup * 1e9), recon = drop + (int64_t)(O.offline * 1e9);
        for (int w = 0; w < P.nworkers; w++) {
            double wr = O.rate > 0 && total ? O.rate * senders_in(w) / total : 0;
            json_t *cmd = json_pack("{s:s,s:I,s:I,s:I,s:f,s:i,s:I,s:I}", "cmd", "run", "t0", (json_int_t)t0,
                                    "measure", (json_int_t)t0, "end", (json_int_t)0, "rate", wr, "window", O.window,
                                    "drop", (json_int_t)drop, "reconnect", (json_int_t)recon);
            send_cmd(w, cmd);
            json_decref(cmd);
        }
        VLOG("storm: drop in %.1f s, reconnect %.1f s later", O.warmup, O.offline);
        cpu_snaps_take(&cpu_a);
        if (wait_all("storm_done", O.warmup + O.offline + O.timeout + 15) != 0) {
            failed_run = 1;
            goto out;
        }
        int64_t caught = sum_i("caught_up"), stotal = sum_i("total"), sfail = sum_i("failed");
        sleep_until(pb_now() + 500000000);       /* a little live traffic after */
        int64_t tend = pb_now();
        cpu_snaps_take(&cpu_b);
        cpu_taken = 1;
        broadcast(json_pack("{s:s}", "cmd", "stop"));
        if (wait_all("stopped", O.timeout + 15) != 0) {
            failed_run = 1;
            goto out;
        }
        bench_cpu_s = 0;
        for (int w = 0; w < P.nworkers; w++) bench_cpu_s += json_real_value(json_object_get(WP[w].msg, "cpu_s"));
        bench_wall_s = (double)(pb_now() - t0) / 1e9;
        merge_timeline();
        run_s = (double)(tend - t0) / 1e9;
        msgs_s = (double)sum_i("win_acked") / run_s;
        deliv_s = (double)sum_i("win_deliveries") / run_s;
        json_object_set_new(res, "storm", json_pack("{s:I,s:I,s:I,s:f}", "clients", (json_int_t)stotal,
                                                    "caught_up", (json_int_t)caught, "failed", (json_int_t)sfail,
                                                    "offline_s", O.offline));
        if (caught != stotal)
            json_array_append_new(probs, json_sprintf("%lld of %lld storm clients did not catch up within %.0f s",
                                                      (long long)(stotal - caught), (long long)stotal, O.timeout));
    } else {
        if (O.rate_frac > 0) {
            double pm, pd;
            if (do_run(0, O.warmup, O.probe, &pm, &pd) != 0) {
                failed_run = 1;
                goto out;
            }
            json_object_set_new(res, "probe", json_pack("{s:f,s:f,s:f,s:i}", "msgs_per_s", pm, "deliveries_per_s",
                                                        pd, "seconds", O.probe, "window", O.window));
            target = pm * O.rate_frac;
        }
        if (do_run(target, O.warmup, O.duration, &msgs_s, &deliv_s) != 0) {
            failed_run = 1;
            goto out;
        }
    }
    if (O.wl != WL_IDLE)
        json_object_set_new(res, "run", json_pack("{s:f,s:f,s:f,s:f,s:I}", "seconds", run_s, "rate_target",
                                                  target, "msgs_per_s", msgs_s, "deliveries_per_s", deliv_s,
                                                  "sent", (json_int_t)sum_i("sent")));
    if (O.wl != WL_IDLE) {
        json_t *run = json_object_get(res, "run");
        if (nspids && cpu_taken && cpu_b.s[0].n) json_object_set_new(run, "server_cpu", cpu_snaps_json(&cpu_a, &cpu_b));
        if (timeline) json_object_set(run, "timeline", timeline);
        double bpct = bench_wall_s > 0 ? 100.0 * bench_cpu_s / bench_wall_s : 0;
        json_object_set_new(run, "bench_cpu_pct", json_real(bpct));
        json_t *sc = json_object_get(run, "server_cpu");
        if (sc) {   /* what the rest of the machine took: other processes */
            double others = json_real_value(json_object_get(sc, "machine_busy_pct")) -
                            json_real_value(json_object_get(sc, "server_pct")) - bpct;
            json_object_set_new(run, "others_cpu_pct", json_real(others > 0 ? others : 0));
        }
    }

    /* verification: gather what was acknowledged, tell everyone what to expect */
    broadcast(json_pack("{s:s}", "cmd", "finish"));
    if (wait_all("acked", O.timeout + 15) != 0) {
        failed_run = 1;
        goto out;
    }
    pl_map maxseq, count;
    pl_map_init(&maxseq);
    pl_map_init(&count);
    for (int w = 0; w < P.nworkers; w++) {
        json_t *list = json_object_get(WP[w].msg, "convs");
        for (size_t i = 0; i < json_array_size(list); i++) {
            json_t *e = json_array_get(list, i);
            int64_t conv = json_integer_value(json_array_get(e, 0));
            intptr_t s = (intptr_t)json_integer_value(json_array_get(e, 1));
            intptr_t n = (intptr_t)json_integer_value(json_array_get(e, 2));
            if ((intptr_t)pl_map_get(&maxseq, conv) < s) pl_map_put(&maxseq, conv, (void *)s);
            pl_map_put(&count, conv, (void *)((intptr_t)pl_map_get(&count, conv) + n));
        }
    }
    json_t *exp = json_array();
    int64_t expected = 0;
    for (size_t i = 0; i < maxseq.cap; i++) {
        if (!maxseq.slots[i].key) continue;
        int64_t conv = maxseq.slots[i].key;
        json_array_append_new(exp, json_pack("[I,I]", (json_int_t)conv, (json_int_t)(intptr_t)maxseq.slots[i].val));
        expected += (int64_t)(intptr_t)pl_map_get(&count, conv) * (int64_t)(intptr_t)pl_map_get(&P.members, conv);
    }
    broadcast(json_pack("{s:s,s:o}", "cmd", "expect", "convs", exp));
    if (wait_all("result", O.timeout + 15) != 0) {
        failed_run = 1;
        goto out;
    }
    {
        pb_hdr lat, ack, recon, catchup;
        merge_hdr(&lat, "lat");
        merge_hdr(&ack, "ack");
        merge_hdr(&recon, "recon");
        merge_hdr(&catchup, "catchup");
        if (O.wl != WL_IDLE) {
            json_object_set_new(res, "latency_ms", pb_pct_json(&lat));
            json_object_set_new(res, "ack_latency_ms", pb_pct_json(&ack));
        }
        json_t *st = json_object_get(res, "storm");
        if (st) {
            json_object_set_new(st, "catchup_ms", pb_pct_json(&catchup));
            json_object_set_new(st, "reconnect_ms", pb_pct_json(&recon));
            json_object_set_new(st, "all_caught_up_s", json_real(catchup.max / 1e9));
            json_object_set_new(st, "replayed", json_integer(sum_i("replayed")));
            json_object_set_new(st, "reconnected", json_integer(sum_i("reconnected")));
        }
        json_t *codes = json_object();
        merge_counts(codes, "error_codes");
        json_t *fr = json_object();
        merge_counts(fr, "fail_reasons");
        int64_t deliveries = sum_i("deliveries");
        json_t *v = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o}",
            "sent", (json_int_t)sum_i("sent"), "acked", (json_int_t)sum_i("acked"),
            "unacked", (json_int_t)sum_i("unacked"), "deliveries", (json_int_t)deliveries,
            "expected_deliveries", (json_int_t)expected, "lost", (json_int_t)sum_i("lost"),
            "duplicated", (json_int_t)sum_i("duplicated"), "reordered", (json_int_t)sum_i("reordered"),
            "ack_reordered", (json_int_t)sum_i("ack_reordered"), "dup_acks", (json_int_t)sum_i("dup_acks"),
            "errors", (json_int_t)sum_i("errors"), "sync_mismatch", (json_int_t)sum_i("sync_mismatch"),
            "unexpected", (json_int_t)sum_i("unexpected"), "ready_missing", (json_int_t)sum_i("ready_missing"),
            "throttled", (json_int_t)sum_i("throttled"), "failed_connections", (json_int_t)sum_i("failed"),
            "error_codes", codes, "fail_reasons", fr);
        json_object_set_new(res, "verify", v);
#define CHECK0(k, what) do { int64_t x_ = sum_i(k); if (x_) json_array_append_new(probs, json_sprintf("%lld %s", (long long)x_, what)); } while (0)
        CHECK0("lost", "messages lost (never delivered to a member that was online)");
        CHECK0("duplicated", "deliveries duplicated");
        CHECK0("reordered", "deliveries out of order (a seq skipped ahead)");
        CHECK0("unacked", "sends never acknowledged");
        CHECK0("dup_acks", "acks flagged duplicate for first sends");
        CHECK0("ack_reordered", "acks out of order for one sender");
        if (sum_i("errors")) {                /* named by code: rate_limited x 24 (audit V2 #9) */
            pl_sbuf m;
            pl_sbuf_init(&m);
            pl_sbuf_printf(&m, "%lld error replies from the server:", (long long)sum_i("errors"));
            const char *code;
            json_t *cnt;
            int first = 1;
            json_object_foreach(codes, code, cnt) {
                pl_sbuf_printf(&m, "%s %s x %lld", first ? "" : ",", code, (long long)json_integer_value(cnt));
                first = 0;
            }
            json_array_append_new(probs, json_string(m.p));
            pl_sbuf_release(&m);
        }
        CHECK0("sync_mismatch", "`synced` seqs that did not match the last replayed event");
        CHECK0("unexpected", "events for conversations the client is not in");
        CHECK0("ready_missing", "`ready` messages missing one of the client's conversations");
#undef CHECK0
        if (deliveries != expected)
            json_array_append_new(probs, json_sprintf("%lld deliveries where %lld were expected",
                                                      (long long)deliveries, (long long)expected));
        if (sum_i("failed") > cfailed)
            json_array_append_new(probs, json_sprintf("%lld connections failed during the run: %s",
                                                      (long long)(sum_i("failed") - cfailed), first_error()));
    }

out:
    if (spid) {
        json_t *sv = json_pack("{s:b,s:i,s:s,s:s,s:I,s:i,s:i}", "embedded", server_pid != 0, "pid", spid, "binary",
                               server_pid ? O.parleyd : "", "command", server_cmd,
                               "rss_end_kib", (json_int_t)rss_all(NULL),
                               "fds_max", fds_max, "fd_limit", proc_fd_limit(spid));
        if (nspids > 1) {
            json_t *per = json_array();
            for (int i = 0; i < nspids; i++)
                json_array_append_new(per, json_pack("{s:i,s:I,s:i,s:i}", "pid", spids[i], "rss_end_kib",
                                                     (json_int_t)proc_rss_kib(spids[i]), "fds_max", fds_max_of[i],
                                                     "fd_limit", proc_fd_limit(spids[i])));
            json_object_set_new(sv, "per_server", per);
            json_object_set_new(sv, "servers", json_integer(nspids));
        }
        json_object_set_new(res, "server", sv);
    }
    end_workers();
    server_alive();
    if (server_died) json_array_append_new(probs, json_sprintf("the server %s", server_exit));
    int keep = failed_run || server_died;
    stop_server(keep);
    json_t *sv = json_object_get(res, "server");
    if (sv) json_object_set_new(sv, "exit", json_string(server_pid || server_died ? server_exit : "external"));
    if (failed_run) json_array_append_new(probs, json_string("the run did not complete (see stderr)"));
    json_object_set_new(json_object_get(res, "machine"), "loadavg_end", pb_loadavg_json());
    long long drops1 = pb_listen_drops();
    if (drops0 >= 0 && drops1 >= drops0)
        json_object_set_new(json_object_get(res, "machine"), "listen_drops", json_integer(drops1 - drops0));
    json_t *v = json_object_get(res, "verify");
    if (!v) {
        v = json_object();
        json_object_set_new(res, "verify", v);
    }
    json_object_set_new(v, "problems", probs);
    int ok = json_array_size(probs) == 0;
    json_object_set_new(v, "ok", json_boolean(ok));
    json_object_set_new(res, "ok", json_boolean(ok));
    pb_print_table(stdout, res);
    if (O.json_path[0] && json_dump_file(res, O.json_path, JSON_INDENT(2)) != 0)
        fprintf(stderr, "parley-bench: cannot write %s\n", O.json_path);
    json_decref(res);
    return ok ? 0 : 1;
}
