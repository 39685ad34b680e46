/* web.h — the web client's static files (web.c). */
#ifndef PL_WEB_H
#define PL_WEB_H

#include "../http/server.h"
#include "config.h"

/* Finds the web root and reads its files into memory (before the loop runs). */
void pl_web_init(const pl_config *cfg);
/* Answers GET/HEAD of a file of the web client; -1 if there is none. */
int  pl_web_serve(pl_http_ctx *ctx, const pl_config *cfg);

#endif
