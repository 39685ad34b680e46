/* bus_redis.c — placeholder: the Redis bus is being written. */
#include <stdio.h>

#include "bus.h"

pl_bus *pl_bus_redis_new(struct uv_loop_s *loop, const pl_bus_redis_opts *o, const pl_bus_handlers *h,
                         char *err, size_t errlen) {
    (void)loop, (void)o, (void)h;
    snprintf(err, errlen, "this parleyd was built without the Redis bus");
    return NULL;
}
