/* report.h — turning merged results into the JSON document and the table.
 *
 * Owns: the shape of the result JSON (documented in docs/benchmarks.md) and
 * the human-readable table. Does not own: measuring anything.
 */
#ifndef PB_REPORT_H
#define PB_REPORT_H

#include <jansson.h>
#include <stdio.h>

#include "hdr.h"

/* {"count","p50","p90","p99","p999","max","mean"} in milliseconds (new ref). */
json_t *pb_pct_json(const pb_hdr *h);
/* {"cpus","model","mem_gib","kernel"} (new ref). */
json_t *pb_machine_json(void);
/* /proc/loadavg as [1, 5, 15] minutes (new ref). */
json_t *pb_loadavg_json(void);
/* The kernel's TcpExt ListenDrops counter (/proc/net/netstat): handshake
 * packets dropped machine-wide because a listener's accept queue was full
 * or it could not take them; -1 when unreadable. Each drop costs a client
 * a TCP retransmission timeout (1 s for a SYN, doubling), so a run's delta
 * explains one-second steps in connect and reconnect times. */
long long pb_listen_drops(void);
/* Latency of n fdatasync calls after 4 KiB appends in dir: the disk's
 * commit cost while the bench runs, which bounds durable-ack latency
 * (new ref; null if dir is not writable). */
json_t *pb_fsync_probe(const char *dir, int n);
/* Prints the table for a result document. */
void    pb_print_table(FILE *f, json_t *res);

#endif
