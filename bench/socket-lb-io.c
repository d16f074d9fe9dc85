// SPDX-License-Identifier: Apache-2.0
// Load generator and backend for bench/socket-lb.ts (compiled by it into build/bench/socket-lb-io).
//   socket-lb-io serve PORT [ADDR]        epoll server: reads 64 B, answers 64 B, on every connection
//   socket-lb-io rpc TARGETS N            N short connections (connect, 64 B request, 64 B reply, close),
//                                         cycling through TARGETS (file: "addr port" lines)
//   socket-lb-io pingpong TARGET_ADDR PORT N   one connection, N × (64 B out, 64 B back)
//   socket-lb-io udpconnect TARGETS N     N × (UDP socket, connect, close): timing connect() alone
//   socket-lb-io loop TARGETS N SLEEP_US  like rpc but keeps going on errors, one line per failure
// Prints one JSON line: {"n","errors","p50_us","p99_us","mean_us","total_s", "codes":{...}}.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 64

struct target {
	struct sockaddr_storage sa;
	socklen_t len;
	int family;
};

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int parse_target(const char *addr, int port, struct target *t)
{
	memset(t, 0, sizeof(*t));
	struct sockaddr_in *in4 = (struct sockaddr_in *)&t->sa;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&t->sa;
	if (inet_pton(AF_INET, addr, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		t->len = sizeof(*in4);
		t->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		t->len = sizeof(*in6);
		t->family = AF_INET6;
		return 0;
	}
	return -1;
}

static struct target *read_targets(const char *file, int *count)
{
	FILE *f = fopen(file, "r");
	if (!f) {
		perror(file);
		exit(2);
	}
	int cap = 16, n = 0;
	struct target *list = malloc(cap * sizeof(*list));
	char addr[128];
	int port;
	while (fscanf(f, "%127s %d", addr, &port) == 2) {
		if (n == cap)
			list = realloc(list, (cap *= 2) * sizeof(*list));
		if (parse_target(addr, port, &list[n]) == 0)
			n++;
	}
	fclose(f);
	*count = n;
	return list;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int codes[256];

static void report(double *samples, int n, int errors, double total_us)
{
	double sum = 0;
	for (int i = 0; i < n; i++)
		sum += samples[i];
	qsort(samples, n, sizeof(double), cmp_double);
	printf("{\"n\":%d,\"errors\":%d,\"p50_us\":%.2f,\"p99_us\":%.2f,\"mean_us\":%.2f,\"total_s\":%.4f,"
	       "\"codes\":{",
	       n, errors, n ? samples[n / 2] : 0, n ? samples[(int)(n * 0.99)] : 0, n ? sum / n : 0,
	       total_us / 1e6);
	int first = 1;
	for (int i = 0; i < 256; i++)
		if (codes[i]) {
			printf("%s\"%s\":%d", first ? "" : ",", strerrorname_np(i) ? strerrorname_np(i) : "E?",
			       codes[i]);
			first = 0;
		}
	printf("}}\n");
}

static int full_io(int fd, char *buf, int write_it)
{
	int done = 0;
	while (done < MSG) {
		ssize_t r = write_it ? write(fd, buf + done, MSG - done) : read(fd, buf + done, MSG - done);
		if (r <= 0)
			return r == 0 ? ECONNRESET : errno;
		done += r;
	}
	return 0;
}

/* One short RPC; 0 or an errno. */
static int rpc_once(const struct target *t)
{
	char buf[MSG] = {0};
	int fd = socket(t->family, SOCK_STREAM, 0);
	if (fd < 0)
		return errno;
	int err = 0;
	if (connect(fd, (const struct sockaddr *)&t->sa, t->len) < 0)
		err = errno;
	if (!err)
		err = full_io(fd, buf, 1);
	if (!err)
		err = full_io(fd, buf, 0);
	close(fd);
	return err;
}

static int cmd_rpc(const char *file, int n, int loop, int sleep_us)
{
	int count;
	struct target *targets = read_targets(file, &count);
	double *samples = malloc(sizeof(double) * n);
	int ok = 0, errors = 0;
	double start = now_us();
	for (int i = 0; i < n; i++) {
		double t0 = now_us();
		int err = rpc_once(&targets[i % count]);
		double dt = now_us() - t0;
		if (err) {
			errors++;
			codes[err & 255]++;
			if (loop)
				fprintf(stderr, "{\"i\":%d,\"code\":\"%s\"}\n", i, strerrorname_np(err));
			else if (errors > 100)
				break;
		} else
			samples[ok++] = dt;
		if (sleep_us)
			usleep(sleep_us);
	}
	report(samples, ok, errors, now_us() - start);
	return 0;
}

static int cmd_udpconnect(const char *file, int n)
{
	int count;
	struct target *targets = read_targets(file, &count);
	double *samples = malloc(sizeof(double) * n);
	int ok = 0, errors = 0;
	double start = now_us();
	for (int i = 0; i < n; i++) {
		const struct target *t = &targets[i % count];
		int fd = socket(t->family, SOCK_DGRAM, 0);
		double t0 = now_us();
		int r = connect(fd, (const struct sockaddr *)&t->sa, t->len);
		double dt = now_us() - t0;
		if (r < 0) {
			errors++;
			codes[errno & 255]++;
		} else
			samples[ok++] = dt;
		close(fd);
	}
	report(samples, ok, errors, now_us() - start);
	return 0;
}

static int cmd_pingpong(const char *addr, int port, int n)
{
	struct target t;
	if (parse_target(addr, port, &t) < 0)
		return 2;
	char buf[MSG] = {0};
	int fd = socket(t.family, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (const struct sockaddr *)&t.sa, t.len) < 0) {
		codes[errno & 255]++;
		report(NULL, 0, 1, 0);
		return 1;
	}
	double *samples = malloc(sizeof(double) * n);
	double start = now_us();
	int ok = 0;
	for (int i = 0; i < n; i++) {
		double t0 = now_us();
		if (full_io(fd, buf, 1) || full_io(fd, buf, 0))
			break;
		samples[ok++] = now_us() - t0;
	}
	close(fd);
	report(samples, ok, n - ok, now_us() - start);
	return 0;
}

struct conn {
	int fd;
	int have;
	char buf[MSG];
};

static int cmd_serve(int port, const char *addr)
{
	struct target t;
	if (parse_target(addr ? addr : "0.0.0.0", port, &t) < 0)
		return 2;
	int lfd = socket(t.family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&t.sa, t.len) < 0 || listen(lfd, 4096) < 0) {
		perror("bind/listen");
		return 1;
	}
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	printf("{\"ready\":true}\n");
	fflush(stdout);
	struct epoll_event events[256];
	for (;;) {
		int n = epoll_wait(ep, events, 256, -1);
		for (int i = 0; i < n; i++) {
			struct conn *c = events[i].data.ptr;
			if (!c) {
				int fd;
				while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					c = calloc(1, sizeof(*c));
					c->fd = fd;
					struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
				}
				continue;
			}
			for (;;) {
				ssize_t r = read(c->fd, c->buf + c->have, MSG - c->have);
				if (r <= 0) {
					if (r < 0 && errno == EAGAIN)
						break;
					close(c->fd);
					free(c);
					break;
				}
				c->have += r;
				if (c->have == MSG) {
					if (write(c->fd, c->buf, MSG) != MSG) {
						close(c->fd);
						free(c);
						break;
					}
					c->have = 0;
				}
			}
		}
	}
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 3 && !strcmp(argv[1], "serve"))
		return cmd_serve(atoi(argv[2]), argc > 3 ? argv[3] : NULL);
	if (argc == 4 && !strcmp(argv[1], "rpc"))
		return cmd_rpc(argv[2], atoi(argv[3]), 0, 0);
	if (argc == 5 && !strcmp(argv[1], "loop"))
		return cmd_rpc(argv[2], atoi(argv[3]), 1, atoi(argv[4]));
	if (argc == 4 && !strcmp(argv[1], "udpconnect"))
		return cmd_udpconnect(argv[2], atoi(argv[3]));
	if (argc == 5 && !strcmp(argv[1], "pingpong"))
		return cmd_pingpong(argv[2], atoi(argv[3]), atoi(argv[4]));
	fprintf(stderr, "usage: see the header of socket-lb-io.c\n");
	return 2;
}
