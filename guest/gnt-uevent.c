/*
 * gnt-uevent: the test guest's immediate report of hardware changes.
 *
 * Built statically by scripts/build-guest.sh into the initramfs as
 * /bin/gnt-uevent and started by guest/init (see the line format there).
 * It sleeps in poll() on two netlink sockets, so an idle guest stays idle:
 *   - NETLINK_KOBJECT_UEVENT: the kernel's device events (PCI functions,
 *     NICs, disks, vCPUs, memory blocks);
 *   - NETLINK_ROUTE, RTMGRP_LINK: link changes, for a NIC's carrier.
 * For each change it writes one line at once,
 *   gnt-guest event <ms of CLOCK_BOOTTIME> <kind> <fields...>
 * to stdout (the console), reacts where the guest must (onlines a new vCPU
 * and a new offline memory block), and writes a
 * newline to the wake-up FIFO so that init's report loop prints its full
 * state block now instead of at its next second: once the burst of events
 * of one change is over (20 ms without one, at most 100 ms), so that each
 * round of the loop, which costs the guest's CPU, sees a whole change. One
 * wake-up is pending at most (FIONREAD).
 *
 * Usage: gnt-uevent MEMORY-POLICY WAKE-FIFO
 * Exits 2 when the netlink sockets cannot be had (init then stops
 * restarting it), 1 on any later failure (init restarts it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 16384
#define QUIET_MS 20  /* a wake-up waits for this long a pause in the events... */
#define BURST_MS 100 /* ...but no longer than this after the first */
#ifndef IFF_LOWER_UP
#define IFF_LOWER_UP 0x10000 /* linux/if.h, which clashes with net/if.h */
#endif
#define LINK_SLOTS 64

static const char *mem_policy = "online"; /* "offline": leave hot-added memory offline */
static int cpu_online = 1; /* GNT_CPU_ONLINE=0: leave hot-added vCPUs offline */
static int wake_fd = -1;
static int woke; /* a change was reported in this batch */

struct link { int index; char carrier; };
static struct link links[LINK_SLOTS];

static long long now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One write per line, so that nothing else on the console splits it. */
static void report(const char *fmt, ...) {
	char line[512];
	int n = snprintf(line, sizeof line, "gnt-guest event %lld ", now_ms());
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2) n = sizeof line - 2;
	line[n++] = '\n';
	if (write(1, line, n) < 0) { /* the console is gone: nothing to tell */ }
	woke = 1;
}

/* Wakes init's report loop, unless a wake-up is already waiting for it. */
static void wake(void) {
	int pending = 0;
	if (wake_fd < 0 || !woke) return;
	woke = 0;
	if (ioctl(wake_fd, FIONREAD, &pending) == 0 && pending > 0) return;
	if (write(wake_fd, "\n", 1) < 0) { /* full or gone: the loop's own second covers it */ }
}

/* The first line of a sysfs file, without its newline; "" when unreadable. */
static const char *read_attr(const char *path, char *buf, size_t size) {
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = -1;
	buf[0] = 0;
	if (fd >= 0) {
		n = read(fd, buf, size - 1);
		close(fd);
	}
	if (n <= 0) return buf;
	buf[n] = 0;
	buf[strcspn(buf, "\n")] = 0;
	return buf;
}

static const char *or_dash(const char *s) { return *s ? s : "-"; }

static void write_attr(const char *path, const char *value) {
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) return;
	if (write(fd, value, strlen(value)) < 0) { /* e.g. already online */ }
	close(fd);
}

static const char *base(const char *p) {
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

static int is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

/* 0000:00:0a.0 and the like: four hex digits and a colon first, as init's pci_of. */
static int is_pci_addr(const char *s) {
	return is_hex(s[0]) && is_hex(s[1]) && is_hex(s[2]) && is_hex(s[3]) && s[4] == ':';
}

/* The PCI address of the parent of a device's "device" (init's pci_of), or "-". */
static const char *pci_of(const char *sysdir, char *out, size_t size) {
	char path[512], real[4096];
	snprintf(path, sizeof path, "%s/device/..", sysdir);
	if (!realpath(path, real) || !is_pci_addr(base(real))) return "-";
	snprintf(out, size, "%s", base(real));
	return out;
}

/* H:C:T:L of a SCSI disk's "device" link (init's scsi_of), or "-". */
static const char *scsi_of(const char *sysdir, char *out, size_t size) {
	char path[1024], link[512];
	int colons = 0;
	snprintf(path, sizeof path, "%s/device", sysdir);
	ssize_t n = readlink(path, link, sizeof link - 1);
	if (n <= 0) return "-";
	link[n] = 0;
	const char *b = base(link);
	if (b[0] < '0' || b[0] > '9') return "-";
	for (const char *c = b; *c; c++) {
		if (*c == ':') colons++;
		else if (*c < '0' || *c > '9') return "-";
	}
	if (colons != 3) return "-";
	snprintf(out, size, "%s", b);
	return out;
}

static long mem_total_kib(void) {
	char buf[256];
	read_attr("/proc/meminfo", buf, sizeof buf);
	return strncmp(buf, "MemTotal:", 9) == 0 ? strtol(buf + 9, NULL, 10) : -1;
}

struct uevent {
	const char *action, *devpath, *subsystem, *devtype, *devname, *interface, *resize;
};

static void parse_uevent(char *buf, ssize_t len, struct uevent *ev) {
	memset(ev, 0, sizeof *ev);
	for (char *p = buf; p < buf + len; p += strlen(p) + 1) {
		if (!strncmp(p, "ACTION=", 7)) ev->action = p + 7;
		else if (!strncmp(p, "DEVPATH=", 8)) ev->devpath = p + 8;
		else if (!strncmp(p, "SUBSYSTEM=", 10)) ev->subsystem = p + 10;
		else if (!strncmp(p, "DEVTYPE=", 8)) ev->devtype = p + 8;
		else if (!strncmp(p, "DEVNAME=", 8)) ev->devname = p + 8;
		else if (!strncmp(p, "INTERFACE=", 10)) ev->interface = p + 10;
		else if (!strncmp(p, "RESIZE=", 7)) ev->resize = p + 7;
	}
}

static int is(const char *a, const char *b) { return a && !strcmp(a, b); }

static void on_pci(const struct uevent *ev) {
	char path[512], ven[32], dev[32], cls[32];
	const char *addr = base(ev->devpath);
	if (is(ev->action, "remove")) { report("pci-remove %s", addr); return; }
	if (!is(ev->action, "add")) return;
#define ATTR(name, buf) (snprintf(path, sizeof path, "/sys%s/" name, ev->devpath), read_attr(path, buf, sizeof buf))
	const char *v = ATTR("vendor", ven), *d = ATTR("device", dev), *c = ATTR("class", cls);
#undef ATTR
	report("pci-add %s %s:%s %s", addr, strncmp(v, "0x", 2) ? v : v + 2, strncmp(d, "0x", 2) ? d : d + 2, c);
}

static void on_net(const struct uevent *ev) {
	char dir[512], mac[64], pci[64];
	const char *name = ev->interface ? ev->interface : base(ev->devpath);
	if (is(ev->action, "remove")) { report("net-remove %s", name); return; }
	if (!is(ev->action, "add")) return;
	snprintf(dir, sizeof dir, "/sys/class/net/%s", name);
	char path[600];
	snprintf(path, sizeof path, "%s/address", dir);
	report("net-add %s %s %s", name, or_dash(read_attr(path, mac, sizeof mac)), pci_of(dir, pci, sizeof pci));
}

static void on_block(const struct uevent *ev) {
	char dir[512], path[1024], size[64], pci[64], scsi[64];
	const char *name = ev->devname ? base(ev->devname) : base(ev->devpath);
	if (!is(ev->devtype, "disk") || !strncmp(name, "loop", 4) || !strncmp(name, "ram", 3)) return;
	if (is(ev->action, "remove")) { report("blk-remove %s", name); return; }
	snprintf(dir, sizeof dir, "/sys/block/%s", name);
	snprintf(path, sizeof path, "%s/size", dir);
	if (is(ev->action, "add"))
		report("blk-add %s %s %s %s", name, or_dash(read_attr(path, size, sizeof size)), pci_of(dir, pci, sizeof pci), scsi_of(dir, scsi, sizeof scsi));
	else if (is(ev->action, "change") && is(ev->resize, "1"))
		report("blk-resize %s %s", name, or_dash(read_attr(path, size, sizeof size)));
}

/* cpuN: onlines it when added (init's online_cpus does the same each second). */
static void on_cpu(const struct uevent *ev) {
	char path[512], v[8];
	const char *name = base(ev->devpath);
	if (strncmp(name, "cpu", 3) || name[3] < '0' || name[3] > '9' || !ev->action) return;
	if (!is(ev->action, "add") && !is(ev->action, "remove") && !is(ev->action, "online") && !is(ev->action, "offline")) return;
	report("cpu-%s %s", ev->action, name + 3);
	if (!is(ev->action, "add") || !cpu_online) return;
	snprintf(path, sizeof path, "/sys%s/online", ev->devpath);
	if (!strcmp(read_attr(path, v, sizeof v), "0")) write_attr(path, "1");
}

/* memoryN: onlines an offline block (auto_online_blocks normally has), reports MemTotal. */
static void on_memory(const struct uevent *ev) {
	char path[512], state[32];
	if (strncmp(base(ev->devpath), "memory", 6)) return;
	if (is(ev->action, "add") && strcmp(mem_policy, "offline")) {
		snprintf(path, sizeof path, "/sys%s/state", ev->devpath);
		if (!strcmp(read_attr(path, state, sizeof state), "offline")) write_attr(path, mem_policy);
	}
	if (is(ev->action, "online") || is(ev->action, "offline") || is(ev->action, "remove"))
		report("mem %ld", mem_total_kib());
}

static void on_uevent(char *buf, ssize_t len) {
	struct uevent ev;
	if (len <= 0 || !memchr(buf, '@', strnlen(buf, len))) return; /* not a kernel uevent */
	parse_uevent(buf, len, &ev);
	if (!ev.devpath || !ev.subsystem) return;
	if (is(ev.subsystem, "pci")) on_pci(&ev);
	else if (is(ev.subsystem, "net")) on_net(&ev);
	else if (is(ev.subsystem, "block")) on_block(&ev);
	else if (is(ev.subsystem, "cpu")) on_cpu(&ev);
	else if (is(ev.subsystem, "memory")) on_memory(&ev);
}

/* The carrier as init prints it: "-" while down (no carrier file), else 0 or 1. */
static char carrier_of(unsigned flags) {
	if (!(flags & IFF_UP)) return '-';
	return (flags & IFF_LOWER_UP) ? '1' : '0';
}

static struct link *link_slot(int index, int create) {
	struct link *free_slot = NULL;
	for (int i = 0; i < LINK_SLOTS; i++) {
		if (links[i].index == index) return &links[i];
		if (!links[i].index && !free_slot) free_slot = &links[i];
	}
	if (!create || !free_slot) return NULL;
	free_slot->index = index;
	free_slot->carrier = 0;
	return free_slot;
}

static void on_link(struct nlmsghdr *h) {
	struct ifinfomsg *ifi = NLMSG_DATA(h);
	const char *name = NULL;
	int len = h->nlmsg_len - NLMSG_LENGTH(sizeof *ifi);
	if (ifi->ifi_flags & IFF_LOOPBACK) return;
	for (struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len))
		if (a->rta_type == IFLA_IFNAME) name = RTA_DATA(a);
	if (h->nlmsg_type == RTM_DELLINK) {
		struct link *l = link_slot(ifi->ifi_index, 0);
		if (l) l->index = 0;
		return;
	}
	struct link *l = link_slot(ifi->ifi_index, 1);
	char c = carrier_of(ifi->ifi_flags);
	if (!l || !name || l->carrier == c) return;
	l->carrier = c;
	report("net-carrier %s %c", name, c);
}

static void on_route(char *buf, ssize_t len) {
	for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len))
		if (h->nlmsg_type == RTM_NEWLINK || h->nlmsg_type == RTM_DELLINK) on_link(h);
}

static int open_netlink(int protocol, unsigned groups) {
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = groups };
	int size = 1 << 20;
	int s = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol);
	if (s < 0) return -1;
	if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
		setsockopt(s, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
	if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0) { close(s); return -1; }
	return s;
}

/* Reads every message waiting on `s`; 0 when drained, -1 on a failure. */
static int drain(int s, void (*handle)(char *, ssize_t)) {
	static char buf[BUF_SIZE];
	for (;;) {
		ssize_t n = recv(s, buf, sizeof buf - 1, 0);
		if (n < 0 && errno == EAGAIN) return 0;
		if (n < 0 && errno == EINTR) continue;
		if (n < 0 && errno == ENOBUFS) { report("overflow"); continue; } /* events lost: the state block resyncs */
		if (n < 0) return -1;
		buf[n] = 0;
		handle(buf, n);
	}
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: gnt-uevent MEMORY-POLICY WAKE-FIFO\n");
		return 2;
	}
	mem_policy = argv[1];
	const char *co = getenv("GNT_CPU_ONLINE");
	if (co && !strcmp(co, "0")) cpu_online = 0;
	wake_fd = open(argv[2], O_RDWR | O_NONBLOCK | O_CLOEXEC);
	struct pollfd fds[2] = {
		{ .fd = open_netlink(NETLINK_KOBJECT_UEVENT, 1), .events = POLLIN },
		{ .fd = open_netlink(NETLINK_ROUTE, RTMGRP_LINK), .events = POLLIN },
	};
	if (fds[0].fd < 0) {
		printf("gnt-guest warning: gnt-uevent: no uevent socket: %s\n", strerror(errno));
		return 2;
	}
	long long first = 0; /* when the first change of a pending wake-up was reported */
	for (;;) {
		/* A change's events come in a burst (a NIC: pci, virtio, net, queues, link):
		 * the wake-up waits until QUIET_MS pass without one, at most BURST_MS. */
		int timeout = -1;
		if (woke) {
			long long left = first + BURST_MS - now_ms();
			timeout = left < 0 ? 0 : left < QUIET_MS ? (int)left : QUIET_MS;
		}
		int n = poll(fds, fds[1].fd < 0 ? 1 : 2, timeout);
		if (n < 0) {
			if (errno == EINTR) continue;
			return 1;
		}
		int had = woke;
		if (drain(fds[0].fd, on_uevent) < 0) return 1;
		if (fds[1].fd >= 0 && drain(fds[1].fd, on_route) < 0) return 1;
		if (woke && !had) first = now_ms();
		if (woke && (n == 0 || now_ms() - first >= BURST_MS)) wake();
	}
}
