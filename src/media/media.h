/* media.h — what an uploaded file is and how it may be served: kinds,
 * content sniffing, inert serving, file names, signed URLs.
 *
 * Owns: the policy, as pure functions the REST handlers (app/api_media.c)
 * call and the unit tests pin down: which kind a type is, which types are
 * shown inline (images, video, audio; never HTML, SVG, XML, scripts or
 * executables, which are sent as application/octet-stream attachments),
 * the sniffed type winning over a declared one, file name sanitizing and
 * RFC 6266 Content-Disposition, and the HMAC of signed media URLs.
 * Does not own: the bytes (blob.h), the rows (store/), thumbnails (thumb.h).
 */
#ifndef PL_MEDIA_H
#define PL_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#include "../core/buf.h"

typedef enum pl_media_kind {
    PL_MEDIA_IMAGE = 1, PL_MEDIA_VIDEO = 2, PL_MEDIA_AUDIO = 3, PL_MEDIA_FILE = 4
} pl_media_kind;

const char *pl_media_kind_name(int kind);           /* "image", ... */
/* The kind of a type: image (raster only; SVG is a file), video, audio, else file. */
int  pl_media_kind_of(const char *mime);
/* 1 if a type may be shown inline: raster images, video, audio. */
int  pl_media_inline_ok(const char *mime);
/* The Content-Type a stored type is served as: itself when inline, else
 * application/octet-stream (so HTML, SVG and scripts are never active). */
const char *pl_media_serve_type(const char *mime);

/* The type to keep, given what the client declared (may be "" or NULL) and
 * what libmagic found in the bytes: the sniffed one, except that a
 * declared type naming the same container in another kind is kept
 * (audio/webm vs video/webm: a voice note), and a generic sniff
 * (application/octet-stream, text/plain) keeps a declared type of the same
 * inert sort only for non-inline kinds (never upgrading to image/video/
 * audio or to an active type: markup, a script or a program, or any
 * unregistered "x-" subtype, which only libmagic may confirm). out: cap >= 128. */
void pl_media_pick_type(const char *declared, const char *sniffed, char *out, size_t cap);

/* Initialises libmagic (once; 0 or -1). Sniffs p[0..n): out gets a MIME
 * type, "application/octet-stream" when unsure. Thread-safe (one magic
 * handle behind a mutex). */
int  pl_media_sniff_init(void);
void pl_media_sniff(const void *p, size_t n, char *out, size_t cap);

/* A file name fit to store and send back: the part after the last '/' or
 * '\', control characters and quotes dropped, invalid UTF-8 replaced by
 * '_', invisible formatting characters dropped and other spaces made plain
 * (pl_utf8_visible), leading dots and spaces trimmed, at most cap - 1
 * bytes cut on a character boundary; "file" when nothing is left. in may
 * hold NUL bytes (a decoded %00: dropped). Returns the length. */
size_t pl_media_sanitize_name(const char *in, size_t n, char *out, size_t cap);
/* Appends "Content-Disposition: <inline|attachment>; filename=\"ascii\";
 * filename*=UTF-8''<pct-encoded>\r\n" (RFC 6266 / 8187) to s. */
void pl_media_disposition(pl_sbuf *s, const char *name, int attachment);

/* The name a thumbnail is served as: name with its extension (if any)
 * replaced by ext ("green.png", "jpg" -> "green.jpg"), cut on a character
 * boundary to fit cap. */
void pl_media_thumb_name(const char *name, const char *ext, char *out, size_t cap);

/* Signed URLs: sig = base64url(HMAC-SHA-256(key, "<id>.<exp>")), key from
 * pl_auth_derive_key("media-url") so every node of a cluster agrees. */
void pl_media_set_key(const uint8_t key[32]);
void pl_media_sign(int64_t id, int64_t exp_s, char out[48]);
/* 0 ok, -1 forged, -2 expired (now_s > exp_s). */
int  pl_media_verify(int64_t id, int64_t exp_s, const char *sig, size_t n, int64_t now_s);
/* How long URLs made by pl_media_url last (seconds; default 3600). */
void pl_media_set_url_ttl(int ttl_s);
/* "/media/<id>?exp=..&sig=..[&thumb=1]": the expiry is now + ttl (never
 * less, to the millisecond) rounded up to a step (the ttl, at most 10
 * min), so URLs made close together are equal and browsers cache them.
 * *exp_out (may be NULL) gets the expiry. */
void pl_media_url(int64_t id, int thumb, char *out, size_t cap, int64_t *exp_out);
/* The same URL with a given expiry (a signed URL's ?info=1: never later
 * than the one presented). */
void pl_media_url_at(int64_t id, int thumb, int64_t exp, char *out, size_t cap);
/* Appends a MESSAGE's data (JSON object text) with a signed "url" (and
 * "thumb_url" in place of the stored "thumb": true) added to each of data.attachments;
 * data as it is when it has none. Every recipient gets the same URLs (they
 * carry no user: a signed URL is a capability until it expires). */
void pl_media_data_with_urls(pl_sbuf *s, const char *data);

#endif
