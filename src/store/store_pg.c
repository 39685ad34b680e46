/* store_pg.c — placeholder: the PostgreSQL backend is being written. */
#include <stdio.h>

#include "store.h"

int pl_store_pg_open(const pl_store_opts *o, pl_store **out, char *err, size_t errlen) {
    (void)o;
    *out = NULL;
    snprintf(err, errlen, "this parleyd was built without the PostgreSQL store");
    return PL_STORE_EUNAVAIL;
}
