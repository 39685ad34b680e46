/* web.h — the web client's static files (web.c). */
#ifndef PL_WEB_H
#define PL_WEB_H

#include "../http/server.h"
#include "config.h"

/* Finds the web root and reads its files into memory (before the loop runs). */
void pl_web_init(const pl_config *cfg);
/* Answers a request for a file of the web client: GET/HEAD with the file,
 * any other method with 405 (Allow: GET, HEAD); -1, answering nothing, if
 * there is no such file. */
int  pl_web_serve(pl_http_ctx *ctx, const pl_config *cfg);

#endif
