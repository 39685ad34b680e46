/* store_pg_conn.c — a libpq connection of the PostgreSQL backend: session
 * settings, prepared statements, pipelined queries, and the values that go
 * in (parameters, binary arrays) and come out (text results).
 *
 * Owns: nothing beyond one PGconn per pg_conn; every thread of the backend
 * has its own (see store_pg.c, invariant 10). pg_int.h says how a pipeline
 * works: pgc_send() queues, pgc_sync() runs everything queued in one round
 * trip and reports the first failure, telling a broken connection (PG_GONE)
 * from a failed statement (PG_ERR).
 */
#include "pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/log.h"

/* ---- parameters and arrays ------------------------------------------------ */

void pg_param_i64(pg_params *p, int64_t x) {
    int i = p->n++;
    snprintf(p->num[i], sizeof p->num[i], "%lld", (long long)x);
    p->v[i] = p->num[i];
    p->len[i] = 0;
    p->fmt[i] = 0;
}

void pg_param_text(pg_params *p, const char *s) {
    int i = p->n++;
    p->v[i] = s;
    p->len[i] = 0;
    p->fmt[i] = 0;
}

void pg_param_bytes(pg_params *p, const void *b, size_t n) {
    int i = p->n++;
    p->v[i] = b ? b : "";
    p->len[i] = (int)n;
    p->fmt[i] = 1;
}

static void put32(char *at, uint32_t v) {
    at[0] = (char)(v >> 24);
    at[1] = (char)(v >> 16);
    at[2] = (char)(v >> 8);
    at[3] = (char)v;
}

static void reserve(pg_arr *a, size_t more) {
    if (a->len + more <= a->cap) return;
    size_t cap = a->cap ? a->cap : 256;
    while (cap < a->len + more) cap *= 2;
    a->buf = pl_realloc(a->buf, cap);
    a->cap = cap;
}

/* Header: ndim, flags, element oid, then (size, lower bound) of the one
 * dimension; patched by pg_param_arr. */
void pg_arr_start(pg_arr *a, uint32_t oid) {
    a->len = 0;
    a->n = 0;
    a->hasnull = 0;
    a->oid = oid;
    reserve(a, 20);
    a->len = 20;
}

void pg_arr_i64(pg_arr *a, int64_t x) {
    reserve(a, 12);
    char *at = a->buf + a->len;
    put32(at, 8);
    put32(at + 4, (uint32_t)((uint64_t)x >> 32));
    put32(at + 8, (uint32_t)x);
    a->len += 12;
    a->n++;
}

void pg_arr_bytes(pg_arr *a, const void *p, size_t n) {
    reserve(a, 4 + (p ? n : 0));
    char *at = a->buf + a->len;
    if (!p) {
        put32(at, 0xffffffffu);
        a->hasnull = 1;
        a->len += 4;
    } else {
        put32(at, (uint32_t)n);
        if (n) memcpy(at + 4, p, n);
        a->len += 4 + n;
    }
    a->n++;
}

void pg_arr_free(pg_arr *a) {
    free(a->buf);
    memset(a, 0, sizeof *a);
}

void pg_param_arr(pg_params *p, pg_arr *a) {
    if (a->n == 0) {                       /* an empty array has no dimension */
        put32(a->buf, 0);
        put32(a->buf + 4, 0);
        put32(a->buf + 8, a->oid);
        a->len = 12;
    } else {
        put32(a->buf, 1);
        put32(a->buf + 4, (uint32_t)a->hasnull);
        put32(a->buf + 8, a->oid);
        put32(a->buf + 12, (uint32_t)a->n);
        put32(a->buf + 16, 1);
    }
    int i = p->n++;
    p->v[i] = a->buf;
    p->len[i] = (int)a->len;
    p->fmt[i] = 1;
}

/* ---- results --------------------------------------------------------------- */

int pg_null(const PGresult *r, int row, int col) { return PQgetisnull(r, row, col); }

int64_t pg_i64(const PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col)) return 0;
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

char *pg_text(const PGresult *r, int row, int col, size_t *len) {
    if (PQgetisnull(r, row, col)) {
        if (len) *len = 0;
        return NULL;
    }
    size_t n = (size_t)PQgetlength(r, row, col);
    char *p = pl_malloc(n + 1);
    memcpy(p, PQgetvalue(r, row, col), n);
    p[n] = '\0';
    if (len) *len = n;
    return p;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* bytea in text format is "\x" and hex digits (bytea_output = hex, set on
 * every connection). */
char *pg_bytea(const PGresult *r, int row, int col, size_t *len) {
    if (PQgetisnull(r, row, col)) {
        if (len) *len = 0;
        return NULL;
    }
    const char *v = PQgetvalue(r, row, col);
    size_t n = (size_t)PQgetlength(r, row, col);
    size_t out = 0;
    char *p;
    if (n >= 2 && v[0] == '\\' && v[1] == 'x') {
        p = pl_malloc((n - 2) / 2 + 1);
        for (size_t i = 2; i + 1 < n; i += 2) {
            int hi = hexval(v[i]), lo = hexval(v[i + 1]);
            if (hi < 0 || lo < 0) break;
            p[out++] = (char)(hi << 4 | lo);
        }
    } else {                                /* not expected: keep it as is */
        p = pl_malloc(n + 1);
        memcpy(p, v, n);
        out = n;
    }
    p[out] = '\0';
    if (len) *len = out;
    return p;
}

int pg_utf8_ok_n(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p;
        if (c < 0x80) { p++; continue; }
        int n;
        unsigned min;
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) { n = 1; cp = c & 0x1f; min = 0x80; }
        else if ((c & 0xf0) == 0xe0) { n = 2; cp = c & 0x0f; min = 0x800; }
        else if ((c & 0xf8) == 0xf0) { n = 3; cp = c & 0x07; min = 0x10000; }
        else return 0;
        if (end - p <= n) return 0;
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        p += n + 1;
    }
    return 1;
}

int pg_utf8_ok(const char *s) { return pg_utf8_ok_n(s, strlen(s)); }

/* ---- connections ----------------------------------------------------------- */

/* Notices (CREATE TABLE IF NOT EXISTS ...) are not errors; never on stderr raw. */
static void on_notice(void *arg, const char *msg) {
    (void)arg;
    (void)msg;
}

/* Copies a libpq message for a JSON log field: one line, no quotes or
 * backslashes. libpq messages name the host and port, never the password. */
void pg_clean_msg(char *dst, size_t n, const char *src) {
    size_t k = 0;
    for (const char *p = src ? src : ""; *p && k + 1 < n; p++) {
        char ch = *p;
        if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
        if (ch == '"' || ch == '\\' || (unsigned char)ch < 0x20) ch = '\'';
        dst[k++] = ch;
    }
    while (k > 0 && dst[k - 1] == ' ') k--;
    dst[k] = '\0';
}

/* Session settings. Generic plans: every statement here has one good plan
 * (index lookups, unnest joins), and planning it at each execution cost a
 * tenth of a small batch (measured). */
static const char *const session_sql[2] = {
    /* writer: durable commits, never wait forever on another node's lock,
     * never hold locks forever if this process stalls mid-transaction */
    "SET synchronous_commit = on; SET bytea_output = hex; SET plan_cache_mode = force_generic_plan;"
    " SET lock_timeout = '10s'; SET idle_in_transaction_session_timeout = '30s'",
    /* readers */
    "SET bytea_output = hex; SET plan_cache_mode = force_generic_plan; SET statement_timeout = '30s';"
    " SET default_transaction_read_only = on; SET idle_in_transaction_session_timeout = '30s'",
};

int pgc_open(pg_conn *c, const char *url, char role, char *err, size_t errlen) {
    pgc_close(c);
    /* Our defaults first: the URL (dbname, expanded in its place) may
     * override them, but not the encoding (text parameters are UTF-8). */
    const char *const keys[] = {
        "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "application_name", "dbname", "client_encoding", NULL,
    };
    const char *const vals[] = {
        "2", "1", "5", "2", "3", "10000", "parleyd", url, "UTF8", NULL,
    };
    PGconn *pq = PQconnectdbParams(keys, vals, 1);
    char m[200];
    if (!pq || PQstatus(pq) != CONNECTION_OK) {
        pg_clean_msg(m, sizeof m, pq ? PQerrorMessage(pq) : "out of memory");
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", m);
        PQfinish(pq);
        return -1;
    }
    PQsetNoticeProcessor(pq, on_notice, NULL);
    PGresult *r = PQexec(pq, session_sql[role == 'w' ? 0 : 1]);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        pg_clean_msg(m, sizeof m, PQerrorMessage(pq));
        snprintf(err, errlen, "cannot set up the PostgreSQL session: %s", m);
        PQclear(r);
        PQfinish(pq);
        return -1;
    }
    PQclear(r);
    c->pq = pq;
    c->tag = role;
    c->sql = role == 'w' ? pg_w_sql : pg_r_sql;
    c->nsql = role == 'w' ? W__COUNT : R__COUNT;
    c->nq = c->nres = 0;
    c->err_slot = -1;
    return 0;
}

int pgc_prepare(pg_conn *c, char *err, size_t errlen) {
    char m[200];
    if (!c->pq || PQenterPipelineMode(c->pq) != 1) {
        snprintf(err, errlen, "cannot enter pipeline mode");
        return -1;
    }
    int ok = 1;
    for (int i = 0; i < c->nsql && ok; i++) {
        char name[16];
        snprintf(name, sizeof name, "%c%d", c->tag, i);
        ok = PQsendPrepare(c->pq, name, c->sql[i], 0, NULL) == 1;
    }
    ok = ok && PQpipelineSync(c->pq) == 1;
    int failed = -1;
    m[0] = '\0';
    for (int i = 0; i < c->nsql && ok; i++) {
        PGresult *r = PQgetResult(c->pq);
        if (!r) { ok = 0; break; }
        if (PQresultStatus(r) != PGRES_COMMAND_OK && failed < 0) {
            failed = i;
            pg_clean_msg(m, sizeof m, PQresultErrorMessage(r));
        }
        PQclear(r);
        for (int k = 0; k < 4 && (r = PQgetResult(c->pq)) != NULL; k++) PQclear(r);
        if (r || PQstatus(c->pq) == CONNECTION_BAD) ok = 0;
    }
    if (ok) {
        PGresult *r = PQgetResult(c->pq);
        ok = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        PQclear(r);
    }
    if (!ok || failed >= 0) {
        if (failed >= 0)
            snprintf(err, errlen, "cannot prepare statement %c%d: %s", c->tag, failed, m);
        else {
            pg_clean_msg(m, sizeof m, PQerrorMessage(c->pq));
            snprintf(err, errlen, "cannot prepare statements: %s", m);
        }
        return -1;
    }
    return 0;
}

static void pgc_clear_results(pg_conn *c) {
    for (int i = 0; i < c->nres; i++) {
        PQclear(c->res[i]);
        c->res[i] = NULL;
    }
    c->nres = 0;
}

void pgc_close(pg_conn *c) {
    pgc_clear_results(c);
    if (c->pq) PQfinish(c->pq);
    c->pq = NULL;
    c->nq = 0;
}

int pgc_send(pg_conn *c, int stmt, const pg_params *p, int want) {
    if (!c->pq) return PG_GONE;
    if (c->nq == 0) pgc_clear_results(c);        /* a new pipeline */
    if (c->nq == PG_PIPE_MAX) {                  /* a bug: never this many */
        pl_log(PL_LOG_ERROR, 0, "store: pipeline overflow", "\"stmt\":%d", stmt);
        return PG_GONE;
    }
    char name[16];
    snprintf(name, sizeof name, "%c%d", c->tag, stmt);
    static const pg_params none = {0};
    if (!p) p = &none;
    if (PQsendQueryPrepared(c->pq, name, p->n, p->v, p->len, p->fmt, 0) != 1) {
        pg_clean_msg(c->errmsg, sizeof c->errmsg, PQerrorMessage(c->pq));
        c->err_stmt = stmt;
        return PG_GONE;
    }
    int slot = c->nq++;
    c->qstmt[slot] = stmt;
    c->want[slot] = (unsigned char)(want != 0);
    c->res[slot] = NULL;
    return slot;
}

/* SQLSTATEs after which the server closes the session. */
static int fatal_state(const char *st) {
    return strncmp(st, "08", 2) == 0 || strcmp(st, "57P01") == 0 || strcmp(st, "57P02") == 0 ||
           strcmp(st, "57P03") == 0;
}

int pgc_sync(pg_conn *c) {
    c->err_slot = -1;
    c->sqlstate[0] = '\0';
    c->errmsg[0] = '\0';
    if (!c->pq) return PG_GONE;
    int nq = c->nq, rc = PG_OK;
    c->nq = 0;
    c->nres = nq;
    if (PQpipelineSync(c->pq) != 1) {
        pg_clean_msg(c->errmsg, sizeof c->errmsg, PQerrorMessage(c->pq));
        return PG_GONE;
    }
    for (int i = 0; i < nq; i++) {
        PGresult *r = PQgetResult(c->pq);
        if (!r) {                                 /* the connection broke */
            rc = PG_GONE;
            break;
        }
        ExecStatusType st = PQresultStatus(r);
        int keep = 0;
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            keep = c->want[i];
        } else if (st != PGRES_PIPELINE_ABORTED && c->err_slot < 0) {
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            c->err_slot = i;
            c->err_stmt = c->qstmt[i];
            snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state ? state : "");
            /* the primary message only: DETAIL may quote a row (a body) */
            const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
            pg_clean_msg(c->errmsg, sizeof c->errmsg, primary ? primary : PQresultErrorMessage(r));
            rc = state && !fatal_state(state) ? PG_ERR : PG_GONE;
        }
        if (keep) c->res[i] = r;
        else PQclear(r);
        /* the NULL that ends this query's results (bounded: a broken
         * connection may keep answering with errors) */
        for (int k = 0; k < 4 && (r = PQgetResult(c->pq)) != NULL; k++) PQclear(r);
        if (r || PQstatus(c->pq) == CONNECTION_BAD) {
            rc = PG_GONE;
            break;
        }
    }
    if (rc != PG_GONE) {
        PGresult *r = PQgetResult(c->pq);
        if (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC) rc = PG_GONE;
        PQclear(r);
    }
    if (rc == PG_GONE && !c->errmsg[0])
        pg_clean_msg(c->errmsg, sizeof c->errmsg, PQerrorMessage(c->pq));
    return rc;
}

int pgc_retryable(const pg_conn *c) {
    return strcmp(c->sqlstate, "40P01") == 0 || strcmp(c->sqlstate, "40001") == 0;
}

void pg_log_failure(int level, const pg_conn *c, const char *what) {
    char stmt[64] = "";
    if (c->err_slot >= 0 && c->err_stmt >= 0 && c->err_stmt < c->nsql)   /* SQL text: no values */
        pg_clean_msg(stmt, sizeof stmt, c->sql[c->err_stmt]);
    pl_log(level, 0, what, "\"stmt\":\"%s\",\"sqlstate\":\"%s\",\"err\":\"%s\"", stmt, c->sqlstate,
           c->errmsg);
}
