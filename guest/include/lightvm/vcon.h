/*
 * vcon: the virtio-console driver of the libOS (lib/vcon.c), for the first
 * NOXS_DEV_CONSOLE entry of the device page. Output goes on the transmit
 * queue (the host serves it at the notify, as the VM's console); input
 * comes in buffers posted on the receive queue, and the device's bit in
 * lvm_poll's ready set says when some came.
 */
#ifndef LIGHTVM_VCON_H
#define LIGHTVM_VCON_H

#include <stddef.h>
#include <stdint.h>

/* Sets the device up (done by the first call that needs it): 0, or -1 if there is none. */
int lvm_vcon_init(void);
/* Its id in the device page: its bit in lvm_poll's ready set (-1 without one). */
int lvm_vcon_id(void);
/* Writes len bytes (at most 4096 a call): 0, or -1. */
int lvm_vcon_write(const void *buf, size_t len);
/* Takes up to cap bytes of the input that came; how many (0: none yet), or -1. */
long lvm_vcon_read(void *buf, size_t cap);

#endif
