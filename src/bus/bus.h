/* bus.h — fan-out of committed conversation events between nodes.
 *
 * Owns: the contract "every committed event reaches every node that serves a
 * member of its conversation, in seq order per conversation". The embedded
 * mode's local bus hands the event straight back to this process; a Redis
 * bus (cluster mode) will publish it on a per-conversation channel and hand
 * events from other nodes to the same handler. Callers publish only events
 * whose commit is durable (store job done), never before.
 * Does not own: which sessions get an event (chat/), encoding (proto/).
 */
#ifndef PL_BUS_H
#define PL_BUS_H

#include "../store/store.h"

typedef struct pl_bus pl_bus;

/* Called on the loop thread for each event, in seq order per conversation.
 * ev is borrowed for the call. */
typedef void (*pl_bus_handler)(void *ud, const pl_event *ev);

typedef struct pl_bus_ops {
    const char *name;
    void (*publish)(pl_bus *b, const pl_event *ev);
    void (*close)(pl_bus *b);
} pl_bus_ops;

struct pl_bus {
    const pl_bus_ops *ops;
    pl_bus_handler    handler;
    void             *ud;
};

/* The in-process bus: publish calls handler synchronously. */
pl_bus *pl_bus_local_new(pl_bus_handler handler, void *ud);

static inline void pl_bus_publish(pl_bus *b, const pl_event *ev) { b->ops->publish(b, ev); }
void pl_bus_close(pl_bus **b);

#endif
