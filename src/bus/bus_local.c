/* bus_local.c — the embedded mode's bus: events go straight to this
 * process's handler (see bus.h). */
#include "bus.h"

#include <stdlib.h>

#include "../core/alloc.h"

static void local_publish(pl_bus *b, const pl_event *ev) { b->handler(b->ud, ev); }
static void local_close(pl_bus *b) { free(b); }

static const pl_bus_ops local_ops = {"local", local_publish, local_close};

pl_bus *pl_bus_local_new(pl_bus_handler handler, void *ud) {
    pl_bus *b = pl_calloc(1, sizeof *b);
    b->ops = &local_ops;
    b->handler = handler;
    b->ud = ud;
    return b;
}

void pl_bus_close(pl_bus **b) {
    if (!*b) return;
    (*b)->ops->close(*b);
    *b = NULL;
}
