/* report.c — the result table and machine description (see report.h). */
#include "report.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench.h"

json_t *pb_pct_json(const pb_hdr *h) {
    return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f}", "count", (json_int_t)h->count,
                     "p50", pb_hdr_percentile(h, 50) / 1e6, "p90", pb_hdr_percentile(h, 90) / 1e6,
                     "p99", pb_hdr_percentile(h, 99) / 1e6, "p999", pb_hdr_percentile(h, 99.9) / 1e6,
                     "max", h->max / 1e6, "mean", pb_hdr_mean(h) / 1e6);
}

json_t *pb_machine_json(void) {
    char model[256] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (!strncmp(line, "model name", 10)) {
                char *c = strchr(line, ':');
                if (c) {
                    snprintf(model, sizeof model, "%s", c + 2);
                    model[strcspn(model, "\n")] = '\0';
                }
                break;
            }
        }
        fclose(f);
    }
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    struct utsname u;
    uname(&u);
    char kernel[400];
    snprintf(kernel, sizeof kernel, "%s %s", u.sysname, u.release);
    return json_pack("{s:i,s:s,s:f,s:s}", "cpus", (int)sysconf(_SC_NPROCESSORS_ONLN), "model", model,
                     "mem_gib", (double)pages * (double)psz / (1024.0 * 1024 * 1024), "kernel", kernel);
}

json_t *pb_loadavg_json(void) {
    double a[3] = {0, 0, 0};
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &a[0], &a[1], &a[2]) != 3) a[0] = a[1] = a[2] = 0;
        fclose(f);
    }
    return json_pack("[f,f,f]", a[0], a[1], a[2]);
}

long long pb_listen_drops(void) {
    FILE *f = fopen("/proc/net/netstat", "r");
    if (!f) return -1;
    char names[8192], vals[8192];
    long long v = -1;
    while (v < 0 && fgets(names, sizeof names, f) && fgets(vals, sizeof vals, f)) {
        if (strncmp(names, "TcpExt:", 7) != 0) continue;
        char *sn, *sv;
        char *n = strtok_r(names, " \n", &sn), *x = strtok_r(vals, " \n", &sv);
        while (n && x) {
            if (strcmp(n, "ListenDrops") == 0) {
                v = atoll(x);
                break;
            }
            n = strtok_r(NULL, " \n", &sn);
            x = strtok_r(NULL, " \n", &sv);
        }
        break;
    }
    fclose(f);
    return v;
}

json_t *pb_fsync_probe(const char *dir, int n) {
    char path[4200];
    snprintf(path, sizeof path, "%s/.parley-bench-fsync", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return json_null();
    pb_hdr *h = calloc(1, sizeof *h);
    char page[4096];
    memset(page, 'f', sizeof page);
    for (int i = 0; i < n; i++) {
        if (write(fd, page, sizeof page) != (ssize_t)sizeof page) break;
        int64_t t = pb_now();
        if (fdatasync(fd) != 0) break;
        pb_hdr_record(h, (uint64_t)(pb_now() - t));
    }
    close(fd);
    unlink(path);
    json_t *j = pb_pct_json(h);
    free(h);
    return j;
}

static double num(json_t *o, const char *path) {
    /* path: "a.b.c" */
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = o;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, ".")) cur = json_object_get(cur, tok);
    return cur ? json_number_value(cur) : 0.0;
}

static void commas(char *out, size_t n, double v) {
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.0f", v);
    size_t len = strlen(tmp), o = 0;
    for (size_t i = 0; i < len && o + 2 < n; i++) {
        out[o++] = tmp[i];
        size_t left = len - i - 1;
        if (left && left % 3 == 0 && tmp[i] != '-') out[o++] = ',';
    }
    out[o] = '\0';
}

static void pct_line(FILE *f, const char *name, json_t *p) {
    if (!p || !json_integer_value(json_object_get(p, "count"))) return;
    fprintf(f, "  %-12s p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms  (n=%lld)\n", name,
            num(p, "p50"), num(p, "p90"), num(p, "p99"), num(p, "p999"), num(p, "max"),
            (long long)json_integer_value(json_object_get(p, "count")));
}

void pb_print_table(FILE *f, json_t *r) {
    char a[64], b[64], c[64];
    const char *wl = json_string_value(json_object_get(r, "workload"));
    json_t *m = json_object_get(r, "machine");
    fprintf(f, "\nparley-bench %s   %s   %d cpus (%s)\n", wl, json_string_value(json_object_get(r, "date")),
            (int)num(m, "cpus"), json_string_value(json_object_get(m, "model")));
    json_t *fs = json_object_get(m, "fdatasync_ms");
    json_t *la0 = json_object_get(m, "loadavg_start"), *la1 = json_object_get(m, "loadavg_end");
    if (json_is_object(fs))
        fprintf(f, "  %-12s load average %.2f at start, %.2f at end; fdatasync p50 %.3f p99 %.3f max %.3f ms\n",
                "machine", json_number_value(json_array_get(la0, 0)), json_number_value(json_array_get(la1, 0)),
                num(fs, "p50"), num(fs, "p99"), num(fs, "max"));
    if (num(m, "listen_drops") > 0) {
        commas(a, sizeof a, num(m, "listen_drops"));
        fprintf(f, "  %-12s %s handshake packets dropped at a full accept queue during the run (TcpExt\n"
                   "  %-12s ListenDrops; each costs its client a 1 s SYN retransmission or more)\n", "", a, "");
    }
    json_t *s = json_object_get(r, "setup");
    if (s) {
        commas(a, sizeof a, num(s, "users"));
        commas(b, sizeof b, num(s, "register_per_s"));
        fprintf(f, "  %-12s %s users in %.2f s (%s/s); %d conversations in %.2f s\n", "setup", a,
                num(s, "register_s"), b, (int)num(s, "conversations"), num(s, "conversations_s"));
    }
    json_t *cn = json_object_get(r, "connect");
    commas(a, sizeof a, num(cn, "connected"));
    commas(b, sizeof b, num(cn, "attempted"));
    commas(c, sizeof c, num(cn, "per_s"));
    json_t *servers = json_object_get(json_object_get(r, "params"), "servers");
    fprintf(f, "  %-12s %s of %s in %.2f s (%s/s), %d workers, %d source addresses", "connect", a, b,
            num(cn, "seconds"), c, (int)num(r, "params.workers"), (int)num(r, "params.addrs"));
    if (json_array_size(servers) > 1) fprintf(f, ", %d servers", (int)json_array_size(servers));
    fputc('\n', f);
    json_t *per = json_object_get(cn, "per_server");
    if (json_array_size(per) > 1) {
        fprintf(f, "  %-12s", "  by server");
        for (size_t i = 0; i < json_array_size(per); i++)
            fprintf(f, " %s %lld", json_string_value(json_array_get(servers, i)),
                    (long long)json_integer_value(json_array_get(per, i)));
        fputc('\n', f);
    }
    json_t *nodes = json_object_get(cn, "nodes");
    if (json_object_size(nodes)) {
        const char *k;
        json_t *v;
        fprintf(f, "  %-12s", "  by node");
        json_object_foreach(nodes, k, v) fprintf(f, " %s %lld", k, (long long)json_integer_value(v));
        fputc('\n', f);
    }
    pct_line(f, "  handshake", json_object_get(cn, "handshake_ms"));
    json_t *ce = json_object_get(r, "ceiling");
    if (json_is_true(json_object_get(ce, "hit")))
        fprintf(f, "  %-12s %s\n", "CEILING", json_string_value(json_object_get(ce, "note")));
    else if (num(cn, "failed") > 0)
        fprintf(f, "  %-12s %d connections failed: %s\n", "FAILED", (int)num(cn, "failed"),
                json_string_value(json_object_get(cn, "first_error")));
    json_t *sv = json_object_get(r, "server");
    if (!strcmp(wl, "idle")) {
        json_t *id = json_object_get(r, "idle");
        commas(a, sizeof a, num(id, "connections"));
        if (num(id, "rss_before_kib") > 0)
            fprintf(f, "  %-12s %s connections: server RSS %.1f MiB -> %.1f MiB = %.0f bytes per connection\n",
                    "memory", a, num(id, "rss_before_kib") / 1024, num(id, "rss_after_kib") / 1024,
                    num(id, "bytes_per_conn"));
        json_t *km = json_object_get(id, "kernel");
        if (km && num(km, "slab_kib_before") >= 0)
            fprintf(f, "  %-12s kernel (machine-wide, both ends): slab %.1f MiB -> %.1f MiB, TCP buffers %.1f -> %.1f MiB"
                       " = %.0f bytes per connection\n", "", num(km, "slab_kib_before") / 1024,
                    num(km, "slab_kib_after") / 1024, num(km, "tcp_mem_pages_before") * 4 / 1024,
                    num(km, "tcp_mem_pages_after") * 4 / 1024, num(km, "bytes_per_conn"));
        json_t *ps = json_object_get(id, "per_server");
        for (size_t i = 0; i < json_array_size(ps); i++) {
            json_t *e = json_array_get(ps, i);
            fprintf(f, "  %-12s pid %d: %d connections (fds), RSS %.1f MiB -> %.1f MiB = %.0f bytes per connection\n",
                    "", (int)num(e, "pid"), (int)num(e, "connections"), num(e, "rss_before_kib") / 1024,
                    num(e, "rss_after_kib") / 1024, num(e, "bytes_per_conn"));
        }
        fprintf(f, "  %-12s %d of %d answered a ping after the hold\n", "alive", (int)num(id, "pongs"),
                (int)num(id, "pinged"));
    }
    json_t *pr = json_object_get(r, "probe");
    if (pr) {
        commas(a, sizeof a, num(pr, "msgs_per_s"));
        commas(b, sizeof b, num(pr, "deliveries_per_s"));
        fprintf(f, "  %-12s max: %s msg/s acked, %s deliveries/s over %.1f s\n", "probe", a, b, num(pr, "seconds"));
    }
    json_t *run = json_object_get(r, "run");
    if (run && strcmp(wl, "idle")) {
        double target = num(run, "rate_target");
        commas(a, sizeof a, num(run, "msgs_per_s"));
        commas(b, sizeof b, num(run, "deliveries_per_s"));
        if (target > 0) commas(c, sizeof c, target);
        fprintf(f, "  %-12s %s%s%s: %s msg/s acked, %s deliveries/s over %.1f s\n", "run",
                target > 0 ? "target " : "max", target > 0 ? c : "", target > 0 ? " msg/s" : "", a, b,
                num(run, "seconds"));
    }
    json_t *scpu = json_object_get(run, "server_cpu");
    json_t *sper = json_object_get(scpu, "per_server");
    if (sper) {
        fprintf(f, "  %-12s %d servers %.0f%% in all (", "cpu", (int)json_array_size(sper), num(scpu, "server_pct"));
        for (size_t i = 0; i < json_array_size(sper); i++)
            fprintf(f, "%s%.0f%%", i ? " " : "", num(json_array_get(sper, i), "server_pct"));
        fprintf(f, "), busiest loop thread %.0f%% (waited %.0f%% for a CPU); bench %.0f%%, other processes %.0f%% "
                   "(%% of one core, %d cores)\n", num(scpu, "loop_pct"), num(scpu, "loop_wait_pct"),
                num(run, "bench_cpu_pct"), num(run, "others_cpu_pct"), (int)num(scpu, "cpus"));
    } else if (scpu) {
        json_t *th = json_object_get(scpu, "threads_pct");
        fprintf(f, "  %-12s server loop thread %.0f%% (waited %.0f%% for a CPU), next threads %.0f%% %.0f%%; "
                   "bench %.0f%%, other processes %.0f%% (%% of one core, %d cores)\n", "cpu",
                num(scpu, "loop_pct"), num(scpu, "loop_wait_pct"), json_number_value(json_array_get(th, 0)),
                json_number_value(json_array_get(th, 1)), num(run, "bench_cpu_pct"), num(run, "others_cpu_pct"),
                (int)num(scpu, "cpus"));
    }
    json_t *tl = json_object_get(run, "timeline");
    if (tl && json_array_size(json_object_get(tl, "deliveries")) > 2) {
        json_t *d = json_object_get(tl, "deliveries"), *mx = json_object_get(tl, "max_latency_ms");
        size_t n = json_array_size(d), worst = 0;
        long long lo = -1, hi = 0;
        for (size_t i = 1; i + 1 < n; i++) {          /* whole buckets only */
            long long v = json_integer_value(json_array_get(d, i));
            if (lo < 0 || v < lo) lo = v;
            if (v > hi) hi = v;
            if (json_number_value(json_array_get(mx, i)) > json_number_value(json_array_get(mx, worst))) worst = i;
        }
        fprintf(f, "  %-12s deliveries per 250 ms between %lld and %lld; worst latency %.1f ms at +%.2f s\n",
                "timeline", lo, hi, json_number_value(json_array_get(mx, worst)), worst * 0.25);
    }
    if (strcmp(wl, "storm") && strcmp(wl, "idle")) {
        pct_line(f, "latency", json_object_get(r, "latency_ms"));
        pct_line(f, "ack", json_object_get(r, "ack_latency_ms"));
    }
    json_t *st = json_object_get(r, "storm");
    if (st) {
        commas(a, sizeof a, num(st, "clients"));
        fprintf(f, "  %-12s %s clients dropped at once, reconnected with resume after %.1f s offline\n", "storm",
                a, num(st, "offline_s"));
        fprintf(f, "  %-12s %d of %d caught up; all caught up %.3f s after the reconnect began; %lld events replayed\n",
                "", (int)num(st, "caught_up"), (int)num(st, "clients"), num(st, "all_caught_up_s"),
                (long long)num(st, "replayed"));
        pct_line(f, "  catch-up", json_object_get(st, "catchup_ms"));
        pct_line(f, "  reconnect", json_object_get(st, "reconnect_ms"));
    }
    json_t *v = json_object_get(r, "verify");
    commas(a, sizeof a, num(v, "deliveries"));
    commas(b, sizeof b, num(v, "expected_deliveries"));
    fprintf(f, "  %-12s sent %lld acked %lld; deliveries %s of %s expected; lost %lld duplicated %lld "
               "reordered %lld errors %lld\n", "verify", (long long)num(v, "sent"), (long long)num(v, "acked"), a, b,
            (long long)num(v, "lost"), (long long)num(v, "duplicated"), (long long)num(v, "reordered"),
            (long long)num(v, "errors"));
    if (num(sv, "rss_end_kib") > 0 && num(sv, "servers") > 1)
        fprintf(f, "  %-12s %d processes, RSS %.1f MiB in all at the end, at most %d fds of %d in one, %s\n",
                "servers", (int)num(sv, "servers"), num(sv, "rss_end_kib") / 1024, (int)num(sv, "fds_max"),
                (int)num(sv, "fd_limit"), json_string_value(json_object_get(sv, "exit")));
    else if (num(sv, "rss_end_kib") > 0)
        fprintf(f, "  %-12s pid %d, RSS %.1f MiB at the end, %d fds of %d, %s\n", "server", (int)num(sv, "pid"),
                num(sv, "rss_end_kib") / 1024, (int)num(sv, "fds_max"), (int)num(sv, "fd_limit"),
                json_string_value(json_object_get(sv, "exit")));
    json_t *probs = json_object_get(v, "problems");
    for (size_t i = 0; i < json_array_size(probs); i++)
        fprintf(f, "  PROBLEM      %s\n", json_string_value(json_array_get(probs, i)));
    fprintf(f, "  %-12s %s\n\n", "result", json_is_true(json_object_get(r, "ok")) ? "OK" : "FAILED");
}
