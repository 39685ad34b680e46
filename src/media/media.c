/* media.c — media policy: kinds, inert types, sniffing, names, signed
 * URLs (see media.h). */
#include "media.h"

#include <jansson.h>
#include <magic.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../core/clock.h"
#include "../core/utf8.h"

const char *pl_media_kind_name(int kind) {
    switch (kind) {
    case PL_MEDIA_IMAGE: return "image";
    case PL_MEDIA_VIDEO: return "video";
    case PL_MEDIA_AUDIO: return "audio";
    default:             return "file";
    }
}

/* Raster image types browsers render without running anything. */
static const char *const inline_images[] = {
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp", NULL,
};

int pl_media_inline_ok(const char *mime) {
    if (!mime) return 0;
    for (int i = 0; inline_images[i]; i++)
        if (strcasecmp(mime, inline_images[i]) == 0) return 1;
    return strncasecmp(mime, "video/", 6) == 0 || strncasecmp(mime, "audio/", 6) == 0;
}

int pl_media_kind_of(const char *mime) {
    if (!mime) return PL_MEDIA_FILE;
    if (strncasecmp(mime, "image/", 6) == 0) return pl_media_inline_ok(mime) ? PL_MEDIA_IMAGE : PL_MEDIA_FILE;
    if (strncasecmp(mime, "video/", 6) == 0) return PL_MEDIA_VIDEO;
    if (strncasecmp(mime, "audio/", 6) == 0) return PL_MEDIA_AUDIO;
    return PL_MEDIA_FILE;
}

const char *pl_media_serve_type(const char *mime) {
    return pl_media_inline_ok(mime) ? mime : "application/octet-stream";
}

/* A type token: [a-z0-9.+-]/[a-z0-9.+-], lower-cased into out; 0 if not. */
static int type_token(const char *in, char *out, size_t cap) {
    size_t n = 0;
    int slash = 0;
    if (!in) return 0;
    for (const char *p = in; *p && *p != ';' && *p != ' '; p++) {
        char c = *p;
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c == '/') slash++;
        else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '+' || c == '-'))
            return 0;
        if (n + 1 >= cap) return 0;
        out[n++] = c;
    }
    out[n] = '\0';
    return slash == 1 && n > 2 && out[0] != '/' && out[n - 1] != '/';
}

/* Words of a subtype that name markup, a script or a program: a declared
 * type holding one (as a whole word between '.', '+' and '-') is active. */
static const char *const active_words[] = {
    "html", "xhtml", "xml", "svg", "javascript", "ecmascript", "jscript", "vbscript", "script",
    "shellscript", "sh", "csh", "ksh", "bash", "zsh", "php", "python", "perl", "ruby", "tcl", "lua",
    "bat", "cmd", "hta", "ps1", "powershell", "executable", "msdownload", "msdos", "elf", "mach",
    "wasm", "java", "jar", "apk", "msi", "dosexec", "sharedlib", "xsl", "xslt", "wml", "mathml", "xul",
    "chm", NULL,
};

/* Fragments that name markup wherever they stand in a subtype
 * ("vnd.ms-htmlhelp", "xhtmlfoo"): audit N3, text/xsl, text/vnd.wap.wml and
 * application/vnd.ms-htmlhelp were kept over a sniffed text/plain. */
static const char *const active_parts[] = {"html", "xml", "xsl", "svg", NULL};

/* 1 if a declared type (a lower-case type_token) may name active content,
 * so that only libmagic's word can make it the kept type: an unregistered
 * "x-" subtype (application/x-*, text/x-*: whatever the uploader chose),
 * anything saying script, or a subtype with a word of active_words. */
static int active_type(const char *d) {
    const char *sub = strchr(d, '/') + 1;
    if (strncmp(sub, "x-", 2) == 0 || strstr(sub, "script") != NULL) return 1;
    for (int i = 0; active_parts[i]; i++)
        if (strstr(sub, active_parts[i])) return 1;
    for (const char *w = sub; *w;) {
        size_t n = strcspn(w, ".+-");
        for (int i = 0; active_words[i]; i++)
            if (strlen(active_words[i]) == n && strncmp(w, active_words[i], n) == 0) return 1;
        w += n;
        if (*w) w++;
    }
    return 0;
}

void pl_media_pick_type(const char *declared, const char *sniffed, char *out, size_t cap) {
    char d[128];
    snprintf(out, cap, "%s", sniffed && *sniffed ? sniffed : "application/octet-stream");
    if (!type_token(declared, d, sizeof d)) return;
    const char *ds = strchr(d, '/'), *ss = strchr(out, '/');
    /* the same container named by another kind: audio/webm recorded as video/webm */
    int av = (strncmp(d, "audio/", 6) == 0 || strncmp(d, "video/", 6) == 0) &&
             (strncmp(out, "audio/", 6) == 0 || strncmp(out, "video/", 6) == 0);
    if (av && ss && strcmp(ds, ss) == 0) { snprintf(out, cap, "%s", d); return; }
    /* a vague sniff keeps a more precise declared type, if it is inert */
    int vague = strcmp(out, "application/octet-stream") == 0 || strcmp(out, "text/plain") == 0;
    if (vague && pl_media_kind_of(d) == PL_MEDIA_FILE && strncmp(d, "image/", 6) != 0 && !active_type(d))
        snprintf(out, cap, "%s", d);
}

/* ---- sniffing --------------------------------------------------------------- */

static magic_t magic;
static pthread_mutex_t magic_mu = PTHREAD_MUTEX_INITIALIZER;

int pl_media_sniff_init(void) {
    pthread_mutex_lock(&magic_mu);
    int rc = 0;
    if (!magic) {
        magic = magic_open(MAGIC_MIME_TYPE | MAGIC_ERROR);
        if (!magic || magic_load(magic, NULL) != 0) {
            if (magic) magic_close(magic);
            magic = NULL;
            rc = -1;
        }
    }
    pthread_mutex_unlock(&magic_mu);
    return rc;
}

void pl_media_sniff(const void *p, size_t n, char *out, size_t cap) {
    const char *t = NULL;
    pthread_mutex_lock(&magic_mu);
    if (magic && n) t = magic_buffer(magic, p, n);
    if (!t || !type_token(t, out, cap)) snprintf(out, cap, "application/octet-stream");
    pthread_mutex_unlock(&magic_mu);
}

/* ---- names ------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (1..4), 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n) {
    if (p[0] < 0x80) return 1;
    size_t len = (p[0] & 0xE0) == 0xC0 ? 2 : (p[0] & 0xF0) == 0xE0 ? 3 : (p[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (!len || len > n || p[0] == 0xC0 || p[0] == 0xC1 || p[0] > 0xF4) return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if (len == 3 && p[0] == 0xE0 && p[1] < 0xA0) return 0;
    if (len == 3 && p[0] == 0xED && p[1] >= 0xA0) return 0;           /* surrogates */
    if (len == 4 && p[0] == 0xF0 && p[1] < 0x90) return 0;
    if (len == 4 && p[0] == 0xF4 && p[1] >= 0x90) return 0;
    return len;
}

size_t pl_media_sanitize_name(const char *in, size_t n, char *out, size_t cap) {
    const char *start = in;
    for (size_t i = 0; i < n; i++)
        if (in[i] == '/' || in[i] == '\\') start = in + i + 1;
    const unsigned char *p = (const unsigned char *)start, *end = (const unsigned char *)in + n;
    size_t o = 0;
    while (p < end && (*p == '.' || *p == ' ')) p++;
    while (p < end) {
        size_t l = utf8_len(p, (size_t)(end - p));
        if (l == 0) {
            if (o + 1 >= cap) break;
            out[o++] = '_';
            p++;
            continue;
        }
        if (l == 1 && (*p < 0x20 || *p == 0x7f || *p == '"' || *p == ':' || *p == '*' || *p == '?' ||
                       *p == '<' || *p == '>' || *p == '|')) {
            p++;
            continue;
        }
        if (o + l >= cap) break;
        memcpy(out + o, p, l);
        o += l;
        p += l;
    }
    /* only what is seen: no invisible formatting (a U+202E that shows
     * "gnp.exe" as "exe.png"), C1 controls, or spaces but the plain one */
    o = pl_utf8_visible((uint8_t *)out, o);
    size_t lead = 0;
    while (lead < o && (out[lead] == '.' || out[lead] == ' ')) lead++;
    memmove(out, out + lead, o - lead);
    o -= lead;
    while (o && (out[o - 1] == ' ' || out[o - 1] == '.')) o--;
    if (!o) o = (size_t)snprintf(out, cap, "file");
    out[o] = '\0';
    return o;
}

void pl_media_disposition(pl_sbuf *s, const char *name, int attachment) {
    pl_sbuf_printf(s, "Content-Disposition: %s; filename=\"", attachment ? "attachment" : "inline");
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        pl_sbuf_addc(s, (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\' && *p != '%') ? (char)*p : '_');
    pl_sbuf_adds(s, "\"; filename*=UTF-8''");
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                    strchr("!#$&+-.^_`|~", *p);
        if (plain && *p) pl_sbuf_addc(s, (char)*p);
        else {
            pl_sbuf_addc(s, '%');
            pl_sbuf_addc(s, hex[*p >> 4]);
            pl_sbuf_addc(s, hex[*p & 15]);
        }
    }
    pl_sbuf_adds(s, "\r\n");
}

void pl_media_thumb_name(const char *name, const char *ext, char *out, size_t cap) {
    const char *dot = strrchr(name, '.');
    size_t n = dot && dot != name ? (size_t)(dot - name) : strlen(name);
    size_t el = strlen(ext) + 1;
    if (n + el >= cap) n = cap > el ? cap - el - 1 : 0;
    while (n && ((const unsigned char *)name)[n] >= 0x80 && ((const unsigned char *)name)[n] < 0xc0) n--;
    snprintf(out, cap, "%.*s.%s", (int)n, name, ext);
}

/* ---- signed URLs ----------------------------------------------------------------- */

static uint8_t url_key[32];

void pl_media_set_key(const uint8_t key[32]) { memcpy(url_key, key, sizeof url_key); }

void pl_media_sign(int64_t id, int64_t exp_s, char out[48]) {
    char msg[64];
    int n = snprintf(msg, sizeof msg, "%lld.%lld", (long long)id, (long long)exp_s);
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256(mac, (const uint8_t *)msg, (unsigned long long)n, url_key);
    sodium_bin2base64(out, 48, mac, sizeof mac, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int pl_media_verify(int64_t id, int64_t exp_s, const char *sig, size_t n, int64_t now_s) {
    char want[48];
    pl_media_sign(id, exp_s, want);
    size_t wl = strlen(want);
    if (n != wl || sodium_memcmp(want, sig, wl) != 0) return -1;
    return now_s > exp_s ? -2 : 0;
}

static int url_ttl = 3600;

void pl_media_set_url_ttl(int ttl_s) { url_ttl = ttl_s > 0 ? ttl_s : 3600; }

void pl_media_url_at(int64_t id, int thumb, int64_t exp, char *out, size_t cap) {
    char sig[48];
    pl_media_sign(id, exp, sig);
    snprintf(out, cap, "/media/%lld?exp=%lld&sig=%s%s", (long long)id, (long long)exp, sig, thumb ? "&thumb=1" : "");
}

/* exp is now + ttl rounded up, in milliseconds, to a whole step: never a
 * moment short of the ttl (the third audit of media found up to a second
 * lost when the current second was truncated first). */
void pl_media_url(int64_t id, int thumb, char *out, size_t cap, int64_t *exp_out) {
    int64_t step_ms = (url_ttl < 600 ? url_ttl : 600) * 1000LL;
    int64_t exp = (pl_now_ms() + url_ttl * 1000LL + step_ms - 1) / step_ms * (step_ms / 1000);
    pl_media_url_at(id, thumb, exp, out, cap);
    if (exp_out) *exp_out = exp;
}

void pl_media_data_with_urls(pl_sbuf *s, const char *data) {
    json_t *o = strstr(data, "\"attachments\"") ? json_loads(data, 0, NULL) : NULL;
    json_t *a = json_object_get(o, "attachments");
    if (!json_is_array(a)) {
        json_decref(o);
        pl_sbuf_adds(s, data);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        char url[200];
        pl_media_url(id, 0, url, sizeof url, NULL);
        json_object_set_new(v, "url", json_string(url));
        if (json_is_true(json_object_get(v, "thumb"))) {
            pl_media_url(id, 1, url, sizeof url, NULL);
            json_object_set_new(v, "thumb_url", json_string(url));
        }
        json_object_del(v, "thumb");      /* the stored marker; clients get thumb_url */
    }
    char *t = json_dumps(o, JSON_COMPACT);
    pl_sbuf_adds(s, t);
    free(t);
    json_decref(o);
}
