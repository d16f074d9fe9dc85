// SPDX-License-Identifier: Apache-2.0
// Load generator and backend for bench/socket-lb.ts (compiled by it into build/bench/socket-lb-io).
// Every command takes an optional leading `--cpu N` that pins the process to that CPU.
//   socket-lb-io serve PORT [ADDR]        epoll server: reads 64 B, answers 64 B, on every connection
//   socket-lb-io mix KIND A B N           one process, N operations on stream A and N on stream B,
//                                         alternating A, B, A, B...: both see the same noise
//   socket-lb-io lockstep KIND A N IN OUT LEADER
//                                         N operations on stream A, each one only after a token
//                                         arrives on the FIFO IN, handing it on through the FIFO OUT
//                                         after: two such processes (one LEADER=1) alternate op by op
//   socket-lb-io loop TARGETS N SLEEP_US  RPCs that keep going on errors, one line per failure
// KIND: rpc (connect, 64 B request, 64 B reply, close; cycling through the targets), pingpong (one
// connection to the first target, 64 B out and 64 B back per operation) or udpconnect (UDP socket,
// connect, close; only connect() timed). A and B are files of "addr port" lines.
// mix and lockstep print {"errors","codes":{...},"a":[µs...],"b":[µs...]} (lockstep: "a" only), one
// sample per operation in order, -1 for a failed one; loop prints {"n","errors","p50_us",...}.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sched.h>
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

static int cmd_loop(const char *file, int n, int sleep_us)
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
			fprintf(stderr, "{\"i\":%d,\"code\":\"%s\"}\n", i, strerrorname_np(err));
		} else
			samples[ok++] = dt;
		if (sleep_us)
			usleep(sleep_us);
	}
	report(samples, ok, errors, now_us() - start);
	return 0;
}

enum kind { KIND_RPC, KIND_PINGPONG, KIND_UDPCONNECT };

/* One sequence of operations of one kind against one target list. */
struct stream {
	enum kind kind;
	struct target *targets;
	int count;
	int next;
	int fd; /* pingpong: the one connection */
};

static int parse_kind(const char *name, enum kind *kind)
{
	if (!strcmp(name, "rpc"))
		*kind = KIND_RPC;
	else if (!strcmp(name, "pingpong"))
		*kind = KIND_PINGPONG;
	else if (!strcmp(name, "udpconnect"))
		*kind = KIND_UDPCONNECT;
	else
		return -1;
	return 0;
}

/* 0 or an errno (pingpong: the connection could not be made). */
static int stream_open(struct stream *s, enum kind kind, const char *file)
{
	s->kind = kind;
	s->targets = read_targets(file, &s->count);
	s->next = 0;
	s->fd = -1;
	if (s->count == 0)
		return EINVAL;
	if (kind != KIND_PINGPONG)
		return 0;
	const struct target *t = &s->targets[0];
	int one = 1;
	s->fd = socket(t->family, SOCK_STREAM, 0);
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(s->fd, (const struct sockaddr *)&t->sa, t->len) < 0)
		return errno;
	return 0;
}

/* One timed operation: its duration in µs, or -1 after counting the errno. */
static double stream_op(struct stream *s)
{
	const struct target *t = &s->targets[s->next++ % s->count];
	char buf[MSG] = {0};
	double t0, dt = -1;
	int err = 0;

	switch (s->kind) {
	case KIND_RPC:
		t0 = now_us();
		err = rpc_once(t);
		dt = now_us() - t0;
		break;
	case KIND_PINGPONG:
		t0 = now_us();
		err = full_io(s->fd, buf, 1);
		if (!err)
			err = full_io(s->fd, buf, 0);
		dt = now_us() - t0;
		break;
	case KIND_UDPCONNECT: {
		int fd = socket(t->family, SOCK_DGRAM, 0);
		t0 = now_us();
		if (connect(fd, (const struct sockaddr *)&t->sa, t->len) < 0)
			err = errno;
		dt = now_us() - t0;
		close(fd);
		break;
	}
	}
	if (err) {
		codes[err & 255]++;
		return -1;
	}
	return dt;
}

static void print_samples(const char *name, const double *samples, int n)
{
	printf(",\"%s\":[", name);
	for (int i = 0; i < n; i++)
		printf(i ? ",%.2f" : "%.2f", samples[i]);
	printf("]");
}

static void print_codes(void)
{
	int first = 1;
	printf("\"codes\":{");
	for (int i = 0; i < 256; i++)
		if (codes[i]) {
			printf("%s\"%s\":%d", first ? "" : ",",
			       strerrorname_np(i) ? strerrorname_np(i) : "E?", codes[i]);
			first = 0;
		}
	printf("}");
}

static int count_errors(const double *samples, int n)
{
	int errors = 0;
	for (int i = 0; i < n; i++)
		errors += samples[i] < 0;
	return errors;
}

static int cmd_mix(enum kind kind, const char *file_a, const char *file_b, int n)
{
	struct stream a, b;
	int err = stream_open(&a, kind, file_a);
	if (!err)
		err = stream_open(&b, kind, file_b);
	if (err) {
		fprintf(stderr, "open: %s\n", strerror(err));
		return 1;
	}
	double *sa = malloc(sizeof(double) * n), *sb = malloc(sizeof(double) * n);
	for (int i = 0; i < n; i++) {
		sa[i] = stream_op(&a);
		sb[i] = stream_op(&b);
	}
	printf("{\"errors\":%d,", count_errors(sa, n) + count_errors(sb, n));
	print_codes();
	print_samples("a", sa, n);
	print_samples("b", sb, n);
	printf("}\n");
	return 0;
}

static int cmd_lockstep(enum kind kind, const char *file, int n, const char *fifo_in,
			const char *fifo_out, int leader)
{
	struct stream a;
	int err = stream_open(&a, kind, file);
	if (err) {
		fprintf(stderr, "open: %s\n", strerror(err));
		return 1;
	}
	/* O_RDWR: opening a FIFO so never blocks waiting for the other side. */
	int in = open(fifo_in, O_RDWR), out = open(fifo_out, O_RDWR);
	if (in < 0 || out < 0) {
		perror("fifo");
		return 1;
	}
	double *sa = malloc(sizeof(double) * n);
	char token = 't';
	for (int i = 0; i < n; i++) {
		int ok = leader || read(in, &token, 1) == 1;
		if (ok) {
			sa[i] = stream_op(&a);
			ok = write(out, &token, 1) == 1 && (!leader || read(in, &token, 1) == 1);
		}
		if (!ok) {
			fprintf(stderr, "lockstep: token exchange failed at op %d: %s\n", i, strerror(errno));
			return 1;
		}
	}
	printf("{\"errors\":%d,", count_errors(sa, n));
	print_codes();
	print_samples("a", sa, n);
	printf("}\n");
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
	/* A peer that closed shows up as an EPIPE error in the results, not as a silent death. */
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 3 && !strcmp(argv[1], "--cpu")) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(atoi(argv[2]), &set);
		if (sched_setaffinity(0, sizeof(set), &set) < 0) {
			perror("sched_setaffinity");
			return 2;
		}
		argc -= 2;
		argv += 2;
	}
	enum kind kind;
	if (argc >= 3 && !strcmp(argv[1], "serve"))
		return cmd_serve(atoi(argv[2]), argc > 3 ? argv[3] : NULL);
	if (argc == 6 && !strcmp(argv[1], "mix") && !parse_kind(argv[2], &kind))
		return cmd_mix(kind, argv[3], argv[4], atoi(argv[5]));
	if (argc == 8 && !strcmp(argv[1], "lockstep") && !parse_kind(argv[2], &kind))
		return cmd_lockstep(kind, argv[3], atoi(argv[4]), argv[5], argv[6], atoi(argv[7]));
	if (argc == 5 && !strcmp(argv[1], "loop"))
		return cmd_loop(argv[2], atoi(argv[3]), atoi(argv[4]));
	fprintf(stderr, "usage: see the header of socket-lb-io.c\n");
	return 2;
}
