/*
 * xs: a xenbus client over the VM's xenstore ring page (lib/xs.c), for a VM
 * created with a xenstore device (its NOXS_DEV_XENSTORE entry's backend is
 * the ring, struct lvm_xenstore_ring of abi.h). Each call writes one xs_wire
 * request, notifies the host (XENBUS_NOTIFY) and waits in POLL for its reply;
 * watch events that come meanwhile are kept for xs_watch_wait. Relative
 * paths are under the VM's own /local/domain/<domid>. No heap, no threads.
 *
 * The calls return >= 0, or -1 with xs_error() naming why: the store's
 * errno name ("ENOENT", "EACCES", ...), or "ENODEV" (no xenstore device),
 * "E2BIG" (a request or reply beyond a buffer), "ETIMEDOUT" (no reply
 * within LVM_XS_TIMEOUT_NS), "EIO" (the ring is not as the protocol says).
 */
#ifndef LIGHTVM_XS_H
#define LIGHTVM_XS_H

#include <stddef.h>
#include <stdint.h>

#include "abi.h"

/* How long a call waits for its reply or an event before it gives up. */
#define LVM_XS_TIMEOUT_NS 10000000000ull

/* xs_wire message types the calls use (Xen's io/xs_wire.h). */
#define XS_DIRECTORY 1
#define XS_READ 2
#define XS_WATCH 4
#define XS_UNWATCH 5
#define XS_WRITE 11
#define XS_WATCH_EVENT 15
#define XS_ERROR 16

/* xenbus device states (Xen's io/xenbus.h). */
#define XENBUS_STATE_INITIALISING 1
#define XENBUS_STATE_INIT_WAIT 2
#define XENBUS_STATE_INITIALISED 3
#define XENBUS_STATE_CONNECTED 4
#define XENBUS_STATE_CLOSING 5
#define XENBUS_STATE_CLOSED 6

/* Finds the ring (done by the first call that needs it): 0, or -1 if the VM has no xenstore device. */
int xs_init(void);
/* Why the last call failed. */
const char *xs_error(void);

/* The value at path into buf (NUL-terminated): its length. */
int xs_read(const char *path, char *buf, size_t cap);
int xs_write(const char *path, const char *value);
/* The children of path into buf, each NUL-terminated, one after the other: their number. */
int xs_directory(const char *path, char *buf, size_t cap);
/* A watch on path (and what is below it); the store fires it once at once. */
int xs_watch(const char *path, const char *token);
int xs_unwatch(const char *path, const char *token);
/* The next watch event: the path that changed and the watch's token. If
 * events were lost (more came during one call than are kept), one event
 * with an empty path and token says so: read again what you watch. */
int xs_watch_wait(char *path, size_t pcap, char *token, size_t tcap);

/*
 * The frontend side of a device's set-up, in the directory dir (e.g.
 * "device/vif/0"): reads dir/backend, says Initialising, waits for the
 * backend's InitWait, publishes dir/ring-ref and dir/event-channel, says
 * Initialised, waits for the backend's Connected and says Connected. seen
 * (may be NULL) hears each state as it is written (who = "frontend"), and
 * each backend state that let it go on (who = "backend"). 0, or -1 (also
 * when the backend closes).
 */
int xs_front_connect(const char *dir, unsigned ring_ref, unsigned event_channel,
                     void (*seen)(const char *who, int state));

#endif
