/* version.h — the release of parleyd and parley, printed by their
 * --version (the protocol's own version is proto.h's PL_PROTO_VERSION). */
#ifndef PL_VERSION_H
#define PL_VERSION_H

#define PL_VERSION "1.0.0"

#endif
