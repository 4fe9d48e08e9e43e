/*
 * gnt_native: the two things Node cannot do by itself and gnt-hotplug needs.
 *
 *   unixConnect(path)             -> fd   connected AF_UNIX stream socket (CLOEXEC,
 *                                        non-blocking: a full backlog throws EAGAIN
 *                                        instead of stalling the event loop)
 *   sendWithFds(fd, buf, fds[])   -> n    sendmsg() of buf, fds attached by SCM_RIGHTS
 *   openTap(template, vnetHdr)    -> {fd, name}  TUNSETIFF on /dev/net/tun
 *   openTapQueues(template, vnetHdr, n) -> {fds[], name}  n queues of one tap
 *                                        (IFF_MULTI_QUEUE, TUNSETIFF once per queue)
 *   linkUp(name)                          sets IFF_UP (SIOCSIFFLAGS), as `ip link set up`
 *   bridgeAddIf(bridge, name)             enslaves name to bridge (SIOCBRADDIF)
 *   bridgeDelIf(bridge, name)             releases name from bridge (SIOCBRDELIF)
 *   openBeneath(dir, rel, flags, mode) -> fd  opens rel relative to dir and never
 *                                        outside it: openat2(RESOLVE_BENEATH |
 *                                        RESOLVE_NO_MAGICLINKS), symlinks that stay
 *                                        inside are followed, escapes fail with EXDEV;
 *                                        without openat2 (ENOSYS) a per-component
 *                                        O_NOFOLLOW walk (no symlinks at all). Always
 *                                        O_CLOEXEC|O_NOCTTY; the fd's real path is
 *                                        checked to lie beneath dir's (else EXDEV).
 *
 * Every error is thrown as a JS Error whose `code` is the errno name
 * (e.g. "ENOENT") and whose message names the call and its argument.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/sockios.h>
#include <linux/if_tun.h>
#include <linux/openat2.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <node_api.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

unsigned int if_nametoindex(const char *ifname);

#define MAX_FDS 16
#define SEND_TIMEOUT_MS 5000

static napi_value throw_errno(napi_env env, int err, const char *what) {
  char msg[2 * 4096 + 256];
  const char *name = strerrorname_np(err);
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, name ? name : "EUNKNOWN", msg);
  return NULL;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "EINVAL", msg);
  return NULL;
}

static int get_string(napi_env env, napi_value v, char *buf, size_t len) {
  size_t got = 0;
  if (napi_get_value_string_utf8(env, v, buf, len, &got) != napi_ok) return -1;
  return got >= len - 1 ? -1 : 0;
}

static napi_value make_int(napi_env env, int64_t v) {
  napi_value out;
  napi_create_int64(env, v, &out);
  return out;
}

static napi_value unix_connect(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  char what[sizeof addr.sun_path + 32];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || get_string(env, argv[0], addr.sun_path, sizeof addr.sun_path) != 0)
    return throw_type(env, "unixConnect(path): path must be a string shorter than 108 bytes");
  snprintf(what, sizeof what, "connect(%s)", addr.sun_path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return throw_errno(env, errno, "socket(AF_UNIX)");
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, what);
  }
  return make_int(env, fd);
}

static int wait_writable(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLOUT};
  int r = poll(&p, 1, SEND_TIMEOUT_MS);
  if (r == 0) return ETIMEDOUT;
  if (r < 0) return errno;
  return 0;
}

/* Sends all of buf; the fds ride on the first chunk that goes out. */
static int send_all(int sock, const char *buf, size_t len, const int *fds, size_t nfds) {
  size_t sent = 0;
  while (sent < len) {
    struct iovec iov = {.iov_base = (void *)(buf + sent), .iov_len = len - sent};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    if (nfds > 0 && sent == 0) {
      memset(control, 0, sizeof control);
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        int err = wait_writable(sock);
        if (err) return err;
        continue;
      }
      return errno;
    }
    sent += (size_t)n;
  }
  return 0;
}

static napi_value send_with_fds(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t sock;
  void *data;
  size_t len;
  uint32_t nfds = 0;
  int fds[MAX_FDS];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3 || napi_get_value_int32(env, argv[0], &sock) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok ||
      napi_get_array_length(env, argv[2], &nfds) != napi_ok)
    return throw_type(env, "sendWithFds(fd, buffer, fds[]): bad arguments");
  if (nfds > MAX_FDS) return throw_type(env, "sendWithFds: at most 16 fds per message");
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value el;
    napi_get_element(env, argv[2], i, &el);
    if (napi_get_value_int32(env, el, &fds[i]) != napi_ok || fds[i] < 0)
      return throw_type(env, "sendWithFds: fds must be non-negative integers");
  }
  int err = send_all(sock, data, len, fds, nfds);
  if (err) return throw_errno(env, err, "sendmsg(SCM_RIGHTS)");
  return make_int(env, (int64_t)len);
}

static napi_value open_tap(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out, name_v;
  struct ifreq ifr;
  bool vnet_hdr = true;
  char what[IFNAMSIZ + 48];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  memset(&ifr, 0, sizeof ifr);
  if (argc < 1 || get_string(env, argv[0], ifr.ifr_name, IFNAMSIZ) != 0)
    return throw_type(env, "openTap(name): name must be a string of at most 15 bytes");
  if (argc >= 2) napi_get_value_bool(env, argv[1], &vnet_hdr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet_hdr ? IFF_VNET_HDR : 0);
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open(/dev/net/tun)");
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    int err = errno;
    close(fd);
    snprintf(what, sizeof what, "ioctl(TUNSETIFF, %s)", ifr.ifr_name);
    return throw_errno(env, err, what);
  }
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "fd", make_int(env, fd));
  napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &name_v);
  napi_set_named_property(env, out, "name", name_v);
  return out;
}

#define MAX_TAP_QUEUES 16

/* Opens queue fds of one multi-queue tap; the first TUNSETIFF names it. */
static napi_value open_tap_queues(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out, arr, name_v;
  char template[IFNAMSIZ], name[IFNAMSIZ], what[IFNAMSIZ + 64];
  bool vnet_hdr = true;
  uint32_t n = 0;
  int fds[MAX_TAP_QUEUES];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  memset(template, 0, sizeof template);
  if (argc < 3 || get_string(env, argv[0], template, IFNAMSIZ) != 0 || napi_get_value_bool(env, argv[1], &vnet_hdr) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &n) != napi_ok)
    return throw_type(env, "openTapQueues(template, vnetHdr, queues): bad arguments");
  if (n < 1 || n > MAX_TAP_QUEUES) return throw_type(env, "openTapQueues: queues must be 1 to 16");
  memset(name, 0, sizeof name);
  for (uint32_t i = 0; i < n; i++) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, i == 0 ? template : name, IFNAMSIZ);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE | (vnet_hdr ? IFF_VNET_HDR : 0);
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    int err = fd < 0 ? errno : 0;
    if (!err && ioctl(fd, TUNSETIFF, &ifr) != 0) {
      err = errno;
      close(fd);
    }
    if (err) {
      for (uint32_t j = 0; j < i; j++) close(fds[j]);
      snprintf(what, sizeof what, "ioctl(TUNSETIFF, %s, multi-queue %u of %u)", ifr.ifr_name, i + 1, n);
      return throw_errno(env, err, what);
    }
    fds[i] = fd;
    if (i == 0) memcpy(name, ifr.ifr_name, IFNAMSIZ);
  }
  napi_create_object(env, &out);
  napi_create_array_with_length(env, n, &arr);
  for (uint32_t i = 0; i < n; i++) napi_set_element(env, arr, i, make_int(env, fds[i]));
  napi_set_named_property(env, out, "fds", arr);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &name_v);
  napi_set_named_property(env, out, "name", name_v);
  return out;
}

/* Runs one interface ioctl on a throwaway AF_UNIX datagram socket. */
static int if_ioctl(unsigned long req, struct ifreq *ifr) {
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  int rc = ioctl(s, req, ifr) == 0 ? 0 : errno;
  close(s);
  return rc;
}

static int get_ifname(napi_env env, napi_value v, char name[IFNAMSIZ]) {
  memset(name, 0, IFNAMSIZ);
  return get_string(env, v, name, IFNAMSIZ);
}

static napi_value link_up(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  struct ifreq ifr;
  char what[IFNAMSIZ + 32];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  memset(&ifr, 0, sizeof ifr);
  if (argc < 1 || get_ifname(env, argv[0], ifr.ifr_name) != 0)
    return throw_type(env, "linkUp(name): name must be a string of at most 15 bytes");
  snprintf(what, sizeof what, "SIOCGIFFLAGS(%s)", ifr.ifr_name);
  int err = if_ioctl(SIOCGIFFLAGS, &ifr);
  if (err) return throw_errno(env, err, what);
  ifr.ifr_flags |= IFF_UP;
  snprintf(what, sizeof what, "SIOCSIFFLAGS(%s, up)", ifr.ifr_name);
  err = if_ioctl(SIOCSIFFLAGS, &ifr);
  if (err) return throw_errno(env, err, what);
  return NULL;
}

static napi_value bridge_port_ioctl(napi_env env, napi_callback_info info, unsigned long req, const char *label) {
  size_t argc = 2;
  napi_value argv[2];
  struct ifreq ifr;
  char port[IFNAMSIZ], what[2 * IFNAMSIZ + 32];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  memset(&ifr, 0, sizeof ifr);
  if (argc < 2 || get_ifname(env, argv[0], ifr.ifr_name) != 0 || get_ifname(env, argv[1], port) != 0)
    return throw_type(env, "bridge port ioctl (bridge, name): names must be strings of at most 15 bytes");
  snprintf(what, sizeof what, "%s(%s, %s)", label, ifr.ifr_name, port);
  ifr.ifr_ifindex = (int)if_nametoindex(port);
  if (ifr.ifr_ifindex == 0) return throw_errno(env, errno, what);
  int err = if_ioctl(req, &ifr);
  if (err) return throw_errno(env, err, what);
  return NULL;
}

static napi_value bridge_add_if(napi_env env, napi_callback_info info) {
  return bridge_port_ioctl(env, info, SIOCBRADDIF, "SIOCBRADDIF");
}

static napi_value bridge_del_if(napi_env env, napi_callback_info info) {
  return bridge_port_ioctl(env, info, SIOCBRDELIF, "SIOCBRDELIF");
}

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

/* The target of /proc/self/fd/<fd> into buf; 0 or an errno. */
static int fd_path(int fd, char *buf, size_t len) {
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, buf, len - 1);
  if (n < 0) return errno;
  if ((size_t)n >= len - 1) return ENAMETOOLONG;
  buf[n] = '\0';
  return 0;
}

/* Whether path is base or lies beneath it. */
static int is_beneath(const char *base, const char *path) {
  size_t n = strlen(base);
  if (n == 1 && base[0] == '/') return 1;
  return strncmp(base, path, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* No openat2: one component at a time, never following a symlink, never "..". */
static int walk_nofollow(int dirfd, const char *rel, int flags, mode_t mode) {
  char copy[PATH_MAX];
  if (rel[0] == '/') { errno = EXDEV; return -1; }
  if (strlen(rel) >= sizeof copy) { errno = ENAMETOOLONG; return -1; }
  strcpy(copy, rel);
  int cur = dup(dirfd);
  if (cur < 0) return -1;
  char *save = NULL;
  char *comp = strtok_r(copy, "/", &save);
  while (comp) {
    char *next = strtok_r(NULL, "/", &save);
    if (strcmp(comp, "..") == 0) { close(cur); errno = EXDEV; return -1; }
    if (strcmp(comp, ".") == 0 && next) { comp = next; continue; }
    int fd = next ? openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                  : openat(cur, comp, flags | O_NOFOLLOW, mode);
    int err = errno;
    close(cur);
    if (fd < 0) { errno = err; return -1; }
    cur = fd;
    comp = next;
  }
  return cur;
}

static int open_beneath_fd(int dirfd, const char *rel, int flags, mode_t mode) {
  struct open_how how = {
      .flags = (uint64_t)flags,
      .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
      .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
  };
  /* Test hook: the fallback a kernel without openat2 (before 5.6) gets. */
  if (getenv("GNT_TEST_NO_OPENAT2")) return walk_nofollow(dirfd, rel, flags, mode);
  long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
  if (fd < 0 && errno == ENOSYS) return walk_nofollow(dirfd, rel, flags, mode);
  return (int)fd;
}

static napi_value open_beneath(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  char dir[PATH_MAX], rel[PATH_MAX], what[2 * PATH_MAX + 32];
  char dir_real[PATH_MAX], fd_real[PATH_MAX];
  int32_t flags = 0, mode = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3 || get_string(env, argv[0], dir, sizeof dir) != 0 || get_string(env, argv[1], rel, sizeof rel) != 0 ||
      napi_get_value_int32(env, argv[2], &flags) != napi_ok)
    return throw_type(env, "openBeneath(dir, relativePath, flags[, mode]): bad arguments");
  if (argc >= 4) napi_get_value_int32(env, argv[3], &mode);
  flags |= O_CLOEXEC | O_NOCTTY;
  snprintf(what, sizeof what, "openat2(%s, %s)", dir, rel);
  int dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) {
    snprintf(what, sizeof what, "open(%s, O_PATH|O_DIRECTORY)", dir);
    return throw_errno(env, errno, what);
  }
  int err = fd_path(dirfd, dir_real, sizeof dir_real);
  int fd = err ? -1 : open_beneath_fd(dirfd, rel, flags, (mode_t)mode);
  if (!err && fd < 0) err = errno;
  close(dirfd);
  if (err) return throw_errno(env, err, what);
  err = fd_path(fd, fd_real, sizeof fd_real);
  if (!err && !is_beneath(dir_real, fd_real)) err = EXDEV;
  if (err) {
    close(fd);
    snprintf(what, sizeof what, "openBeneath(%s, %s): real path check", dir, rel);
    return throw_errno(env, err, what);
  }
  return make_int(env, fd);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"unixConnect", NULL, unix_connect, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendWithFds", NULL, send_with_fds, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openTap", NULL, open_tap, NULL, NULL, NULL, napi_enumerable, NULL},
      {"linkUp", NULL, link_up, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openTapQueues", NULL, open_tap_queues, NULL, NULL, NULL, napi_enumerable, NULL},
      {"bridgeAddIf", NULL, bridge_add_if, NULL, NULL, NULL, napi_enumerable, NULL},
      {"bridgeDelIf", NULL, bridge_del_if, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openBeneath", NULL, open_beneath, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
