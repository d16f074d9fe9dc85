// SPDX-License-Identifier: Apache-2.0
/*
 * fastpath-io: real-socket scenarios for the same-node fast path tests and benchmark
 * (test/bpf/fastpath*.test.ts, bench/fastpath.ts). One process makes both ends of every connection
 * over loopback, so both sockets are in the cgroup it runs in. Reads are BLOCKING recv() calls, as
 * a C or Go server does them: an EAGAIN from a blocking read is counted, never retried silently.
 * Data is a seeded pseudo-random stream checked byte by byte.
 *
 * Built by the Makefile into build/fastpath-io. Each run prints one JSON object on stdout.
 *
 * -6: IPv6 (::1). -n: O_NONBLOCK sockets driven by poll(), as an event loop (Node, Go) uses them;
 * an EAGAIN there is normal and waited out with poll(). Without -n every read is a blocking recv().
 * -c A,B (pingpong, bulk, connrate): client side pinned to CPU A, server side to CPU B, so every
 * run of a benchmark has the same placement (A == B: one core; A != B: a wake-up across cores).
 *
 *   fastpath-io [-6] [-n] xfer SIZE PATTERN       full duplex SIZE bytes each way; PATTERN
 * small|huge|mixed fastpath-io [-6] [-n] halfclose SIZE          client sends SIZE,
 * shutdown(SHUT_WR); server replies after EOF fastpath-io [-6] [-n] sendfile SIZE           client
 * sends a file with sendfile(), then again with splice() fastpath-io [-6] [-n] concurrent N SIZE N
 * connections at once, each SIZE bytes each way fastpath-io [-6] [-n] peerclose SIZE server reads
 * 64 KiB then closes; the writer must get an error fastpath-io [-6] [-n] slowreader SIZE server
 * reads 16 KiB then sleeps 1 ms, until SIZE bytes fastpath-io [-6] [-n] stall CAP server stops
 * reading: bytes the sender could queue (up to CAP), then blocking reads of everything plus a late
 * tail fastpath-io [-6] [-n] hold SECONDS            one connection, 1 KiB each way, kept open
 * SECONDS (map entries) fastpath-io [-6] [-n] pingpong SIZE ITERS     request/response latency
 * percentiles fastpath-io [-6] [-n] bulk SIZE TOTAL         one-way throughput with SIZE-byte
 * writes fastpath-io [-6] [-n] connrate SIZE COUNT     connect, SIZE request, SIZE reply, close;
 * rate
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int family = AF_INET;
static int nonblock;	/* -n: O_NONBLOCK sockets driven by poll(), as an event loop does */
static int listen_port; /* -p PORT: listen on this port instead of an ephemeral one */
static int
    accept_blocking; /* -b (with -n): accept() without SOCK_NONBLOCK, the server side blocks */
/* -c A,B (benchmarks): client side on CPU A, server side on CPU B; -1: wherever the scheduler puts
 * them */
static int client_cpu = -1, server_cpu = -1;

/* Pins the calling thread to `cpu` (benchmarks: the same placement in every run); -1: no pinning.
 */
static void pin_to(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		printf("{\"ok\":false,\"error\":\"sched_setaffinity %d: %s\"}\n", cpu,
		       strerror(errno));
		exit(2);
	}
}

/* In -n mode, waits for the socket to become ready and returns 1 (retry); otherwise 0. */
static int wait_ready(int fd, short events)
{
	struct pollfd pfd = {fd, events, 0};

	int saved = errno;

	/* Only a non-blocking socket may see EAGAIN; on a blocking one it is counted by the caller.
	 */
	if (!nonblock || (saved != EAGAIN && saved != EWOULDBLOCK) ||
	    !(fcntl(fd, F_GETFL) & O_NONBLOCK)) {
		errno = saved;
		return 0;
	}
	poll(&pfd, 1, 1000);
	return 1;
}

static void die(const char *what)
{
	printf("{\"ok\":false,\"error\":\"%s: %s\"}\n", what, strerror(errno));
	fflush(stdout);
	exit(2);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The byte at position `pos` of stream `seed`: a cheap hash of both, so any reorder or loss shows.
 */
static inline uint8_t stream_byte(uint64_t seed, uint64_t pos)
{
	uint64_t x = (pos >> 3) * 0x9E3779B97F4A7C15ULL ^ seed * 0xC2B2AE3D27D4EB4FULL;

	x ^= x >> 29;
	x *= 0xBF58476D1CE4E5B9ULL;
	x ^= x >> 32;
	return (uint8_t)(x >> ((pos & 7) * 8));
}

static void fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t pos)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = stream_byte(seed, pos + i);
}

/* Listening socket on loopback, ephemeral port. */
static int listen_loopback(struct sockaddr_storage *addr, socklen_t *len)
{
	int fd = socket(family, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
	int one = 1;

	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(addr, 0, sizeof(*addr));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)addr;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a->sin_port = htons((uint16_t)listen_port);
		*len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)addr;

		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		a->sin6_port = htons((uint16_t)listen_port);
		*len = sizeof(*a);
	}
	if (bind(fd, (struct sockaddr *)addr, *len) < 0)
		die("bind");
	if (listen(fd, 1024) < 0)
		die("listen");
	if (getsockname(fd, (struct sockaddr *)addr, len) < 0)
		die("getsockname");
	return fd;
}

static int connect_to(const struct sockaddr_storage *addr, socklen_t len)
{
	int fd = socket(family, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);

	if (fd < 0)
		die("socket");
	if (connect(fd, (const struct sockaddr *)addr, len) < 0) {
		struct pollfd pfd = {fd, POLLOUT, 0};
		int err = 0;
		socklen_t elen = sizeof(err);

		if (errno != EINPROGRESS)
			die("connect");
		poll(&pfd, 1, 5000);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
		if (err) {
			errno = err;
			die("connect");
		}
	}
	return fd;
}

static int accept_from(int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, nonblock && !accept_blocking ? SOCK_NONBLOCK : 0);

		if (fd >= 0)
			return fd;
		if (!wait_ready(lfd, POLLIN))
			return -1;
	}
}

/* A connected pair: *c is the client side, *s the accepted server side. */
static void make_pair(int lfd, const struct sockaddr_storage *addr, socklen_t len, int *c, int *s)
{
	*c = connect_to(addr, len);
	*s = accept_from(lfd);
	if (*s < 0)
		die("accept");
}

static int write_full(int fd, const uint8_t *buf, size_t n);

struct counters {
	uint64_t eagain;   /* EAGAIN/EWOULDBLOCK returned by a blocking recv() */
	uint64_t mismatch; /* bytes that differed from the expected stream */
	int64_t first_bad; /* offset of the first wrong byte, -1 when none */
	int read_error;	   /* errno of a failed recv, 0 when none */
};

static pthread_mutex_t counters_lock = PTHREAD_MUTEX_INITIALIZER;

/* Writes `size` bytes of stream `seed`; pattern 0 small random chunks, 1 one write call, 2 mixed.
 */
static int64_t write_stream(int fd, uint64_t size, uint64_t seed, int pattern)
{
	uint8_t *buf = malloc(size ? size : 1);
	uint64_t off = 0, rnd = seed | 1;

	if (!buf)
		die("malloc");
	fill(buf, size, seed, 0);
	while (off < size) {
		size_t chunk;
		ssize_t n;

		rnd ^= rnd << 13;
		rnd ^= rnd >> 7;
		rnd ^= rnd << 17;
		if (pattern == 0)
			chunk = 1 + rnd % 512;
		else if (pattern == 1)
			chunk = size - off;
		else
			chunk = (rnd & 1) ? 1 + rnd % 64 : 1 + rnd % (256 * 1024);
		if (chunk > size - off)
			chunk = size - off;
		n = send(fd, buf + off, chunk, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR || wait_ready(fd, POLLOUT))
				continue;
			free(buf);
			return -errno;
		}
		off += (uint64_t)n;
	}
	free(buf);
	return (int64_t)off;
}

/* Blocking reads until EOF or `limit` bytes, checking the stream; returns bytes read. */
static uint64_t read_stream(int fd, uint64_t limit, uint64_t seed, struct counters *c, size_t chunk,
			    int sleep_us)
{
	uint8_t *buf = malloc(chunk);
	uint64_t got = 0;

	if (!buf)
		die("malloc");
	while (got < limit) {
		size_t want = chunk;
		ssize_t n;

		if (want > limit - got)
			want = limit - got;
		n = recv(fd, buf, want, 0);
		if (n < 0) {
			if (wait_ready(fd, POLLIN))
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				pthread_mutex_lock(&counters_lock);
				c->eagain++;
				pthread_mutex_unlock(&counters_lock);
				continue;
			}
			if (errno == EINTR)
				continue;
			c->read_error = errno;
			break;
		}
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != stream_byte(seed, got + (uint64_t)i)) {
				pthread_mutex_lock(&counters_lock);
				if (c->first_bad < 0)
					c->first_bad = (int64_t)(got + (uint64_t)i);
				c->mismatch++;
				pthread_mutex_unlock(&counters_lock);
			}
		}
		got += (uint64_t)n;
		if (sleep_us)
			usleep((useconds_t)sleep_us);
	}
	free(buf);
	return got;
}

static void print_counters(const struct counters *c)
{
	printf("\"eagain\":%llu,\"mismatch\":%llu,\"firstBad\":%lld,\"readError\":%d",
	       (unsigned long long)c->eagain, (unsigned long long)c->mismatch,
	       (long long)c->first_bad, c->read_error);
}

/* ---- full-duplex transfer ---- */

struct writer_arg {
	int fd;
	uint64_t size;
	uint64_t seed;
	int pattern;
	int shut;
	int64_t result;
};

static void *writer_main(void *p)
{
	struct writer_arg *w = p;

	w->result = write_stream(w->fd, w->size, w->seed, w->pattern);
	if (w->shut)
		shutdown(w->fd, SHUT_WR);
	return NULL;
}

struct reader_arg {
	int fd;
	uint64_t limit;
	uint64_t seed;
	struct counters *c;
	uint64_t got;
};

static void *reader_main(void *p)
{
	struct reader_arg *r = p;

	r->got = read_stream(r->fd, r->limit, r->seed, r->c, 65536, 0);
	return NULL;
}

static int parse_pattern(const char *s)
{
	if (!strcmp(s, "small"))
		return 0;
	if (!strcmp(s, "huge"))
		return 1;
	if (!strcmp(s, "mixed"))
		return 2;
	fprintf(stderr, "pattern: expected small|huge|mixed, got %s\n", s);
	exit(64);
}

/* One connection, both directions at once; returns 1 when byte-exact. */
static int duplex(int cfd, int sfd, uint64_t size, int pattern, uint64_t seed, struct counters *c,
		  uint64_t *moved)
{
	struct writer_arg wc = {cfd, size, seed, pattern, 1, 0},
			  ws = {sfd, size, seed + 1, pattern, 1, 0};
	struct reader_arg rs = {sfd, UINT64_MAX, seed, c, 0},
			  rc = {cfd, UINT64_MAX, seed + 1, c, 0};
	pthread_t t[4];

	pthread_create(&t[0], NULL, writer_main, &wc);
	pthread_create(&t[1], NULL, writer_main, &ws);
	pthread_create(&t[2], NULL, reader_main, &rs);
	pthread_create(&t[3], NULL, reader_main, &rc);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	*moved += rs.got + rc.got;
	return wc.result == (int64_t)size && ws.result == (int64_t)size && rs.got == size &&
	       rc.got == size;
}

static int cmd_xfer(uint64_t size, int pattern)
{
	struct sockaddr_storage addr;
	socklen_t len;
	struct counters c = {0, 0, -1, 0};
	uint64_t moved = 0;
	int lfd = listen_loopback(&addr, &len), cfd, sfd, ok;
	double t0 = now_s();

	make_pair(lfd, &addr, len, &cfd, &sfd);
	ok = duplex(cfd, sfd, size, pattern, 1000 + size, &c, &moved);
	ok = ok && !c.mismatch && !c.eagain && !c.read_error;
	printf("{\"ok\":%s,\"bytes\":%llu,\"seconds\":%.6f,", ok ? "true" : "false",
	       (unsigned long long)moved, now_s() - t0);
	print_counters(&c);
	printf("}\n");
	close(cfd);
	close(sfd);
	close(lfd);
	return 0;
}

/* ---- half close then reply ---- */

static int cmd_halfclose(uint64_t size)
{
	struct sockaddr_storage addr;
	socklen_t len;
	struct counters c = {0, 0, -1, 0};
	int lfd = listen_loopback(&addr, &len), cfd, sfd;
	struct writer_arg wc = {0, size, 7, 2, 1, 0};
	pthread_t t;
	uint64_t got_s, got_c;
	int64_t replied;
	int ok;

	make_pair(lfd, &addr, len, &cfd, &sfd);
	wc.fd = cfd;
	pthread_create(&t, NULL, writer_main, &wc);
	got_s = read_stream(sfd, UINT64_MAX, 7, &c, 65536, 0); /* until EOF from SHUT_WR */
	pthread_join(t, NULL);
	/* The server replies on the half-closed connection, then closes; the client reads to EOF.
	 */
	replied = write_stream(sfd, size, 8, 2);
	shutdown(sfd, SHUT_WR);
	got_c = read_stream(cfd, UINT64_MAX, 8, &c, 65536, 0);
	ok = wc.result == (int64_t)size && got_s == size && replied == (int64_t)size &&
	     got_c == size && !c.mismatch && !c.eagain && !c.read_error;
	printf("{\"ok\":%s,\"bytes\":%llu,", ok ? "true" : "false",
	       (unsigned long long)(got_s + got_c));
	print_counters(&c);
	printf("}\n");
	close(cfd);
	close(sfd);
	close(lfd);
	return 0;
}

/* ---- sendfile and splice from a file ---- */

struct file_sender {
	int fd;
	int file;
	uint64_t size;
	int use_splice;
	int64_t result;
};

static void *file_sender_main(void *p)
{
	struct file_sender *f = p;
	off_t off = 0;
	uint64_t sent = 0;

	if (!f->use_splice) {
		while (sent < f->size) {
			ssize_t n = sendfile(f->fd, f->file, &off, f->size - sent);

			if (n < 0 && wait_ready(f->fd, POLLOUT))
				continue;
			if (n <= 0) {
				f->result = n < 0 ? -errno : -1;
				return NULL;
			}
			sent += (uint64_t)n;
		}
	} else {
		int pipefd[2];
		loff_t in_off = 0;

		if (pipe(pipefd) < 0) {
			f->result = -errno;
			return NULL;
		}
		while (sent < f->size) {
			ssize_t n = splice(f->file, &in_off, pipefd[1], NULL, f->size - sent,
					   SPLICE_F_MOVE);

			if (n <= 0) {
				f->result = n < 0 ? -errno : -1;
				return NULL;
			}
			while (n > 0) {
				ssize_t m = splice(pipefd[0], NULL, f->fd, NULL, (size_t)n,
						   SPLICE_F_MOVE | SPLICE_F_MORE);

				if (m < 0 && wait_ready(f->fd, POLLOUT))
					continue;
				if (m <= 0) {
					f->result = m < 0 ? -errno : -1;
					return NULL;
				}
				n -= m;
				sent += (uint64_t)m;
			}
		}
		close(pipefd[0]);
		close(pipefd[1]);
	}
	shutdown(f->fd, SHUT_WR);
	f->result = (int64_t)sent;
	return NULL;
}

static int cmd_sendfile(uint64_t size)
{
	char path[] = "/tmp/fastpath-io-XXXXXX";
	struct sockaddr_storage addr;
	socklen_t len;
	struct counters c = {0, 0, -1, 0};
	int lfd = listen_loopback(&addr, &len), file = mkstemp(path), ok = 1;
	uint64_t total = 0;
	uint8_t *buf = malloc(size ? size : 1);

	if (file < 0 || !buf)
		die("mkstemp");
	unlink(path);
	fill(buf, size, 42, 0);
	if (write(file, buf, size) != (ssize_t)size)
		die("write file");
	free(buf);
	for (int use_splice = 0; use_splice <= 1; use_splice++) {
		struct file_sender f = {0, file, size, use_splice, 0};
		pthread_t t;
		int cfd, sfd;
		uint64_t got;

		make_pair(lfd, &addr, len, &cfd, &sfd);
		f.fd = cfd;
		pthread_create(&t, NULL, file_sender_main, &f);
		got = read_stream(sfd, UINT64_MAX, 42, &c, 65536, 0);
		pthread_join(t, NULL);
		ok = ok && f.result == (int64_t)size && got == size;
		total += got;
		close(cfd);
		close(sfd);
	}
	ok = ok && !c.mismatch && !c.eagain && !c.read_error;
	printf("{\"ok\":%s,\"bytes\":%llu,", ok ? "true" : "false", (unsigned long long)total);
	print_counters(&c);
	printf("}\n");
	close(file);
	close(lfd);
	return 0;
}

/* ---- many connections at once ---- */

struct conn_job {
	int cfd, sfd;
	uint64_t size, seed;
	struct counters *c;
	int ok;
	uint64_t moved;
};

static void *conn_main(void *p)
{
	struct conn_job *j = p;

	j->ok = duplex(j->cfd, j->sfd, j->size, 2, j->seed, j->c, &j->moved);
	return NULL;
}

static int cmd_concurrent(int n, uint64_t size)
{
	struct sockaddr_storage addr;
	socklen_t len;
	struct counters c = {0, 0, -1, 0};
	int lfd = listen_loopback(&addr, &len), ok = 1;
	struct conn_job *jobs = calloc((size_t)n, sizeof(*jobs));
	pthread_t *t = calloc((size_t)n, sizeof(*t));
	uint64_t moved = 0;
	double t0 = now_s();

	if (!jobs || !t)
		die("calloc");
	for (int i = 0; i < n; i++) {
		make_pair(lfd, &addr, len, &jobs[i].cfd, &jobs[i].sfd);
		jobs[i].size = size;
		jobs[i].seed = 5000 + (uint64_t)i * 2;
		jobs[i].c = &c;
	}
	for (int i = 0; i < n; i++)
		pthread_create(&t[i], NULL, conn_main, &jobs[i]);
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		ok = ok && jobs[i].ok;
		moved += jobs[i].moved;
		close(jobs[i].cfd);
		close(jobs[i].sfd);
	}
	ok = ok && !c.mismatch && !c.eagain && !c.read_error;
	printf("{\"ok\":%s,\"connections\":%d,\"bytes\":%llu,\"seconds\":%.6f,",
	       ok ? "true" : "false", n, (unsigned long long)moved, now_s() - t0);
	print_counters(&c);
	printf("}\n");
	close(lfd);
	return 0;
}

/* ---- a peer that closes mid-stream ---- */

static int cmd_peerclose(uint64_t size)
{
	struct sockaddr_storage addr;
	socklen_t len;
	struct counters c = {0, 0, -1, 0};
	int lfd = listen_loopback(&addr, &len), cfd, sfd;
	struct writer_arg wc = {0, size, 9, 2, 1, 0};
	pthread_t t;
	uint64_t got;
	double t0 = now_s();

	make_pair(lfd, &addr, len, &cfd, &sfd);
	wc.fd = cfd;
	pthread_create(&t, NULL, writer_main, &wc);
	got = read_stream(sfd, 65536, 9, &c, 4096, 0);
	close(sfd);
	pthread_join(t, NULL);
	/* The writer either finished before the close or got EPIPE/ECONNRESET: never a hang or a
	 * bad byte. */
	printf("{\"ok\":%s,\"read\":%llu,\"writerResult\":%lld,\"seconds\":%.6f,",
	       (got == 65536 && !c.mismatch && !c.eagain &&
		(wc.result == (int64_t)size || wc.result == -EPIPE || wc.result == -ECONNRESET))
		   ? "true"
		   : "false",
	       (unsigned long long)got, (long long)wc.result, now_s() - t0);
	print_counters(&c);
	printf("}\n");
	close(cfd);
	close(lfd);
	return 0;
}

/* ---- a reader slower than the writer ---- */

static int cmd_slowreader(uint64_t size)
{
	struct sockaddr_storage addr;
	socklen_t len;
	struct counters c = {0, 0, -1, 0};
	int lfd = listen_loopback(&addr, &len), cfd, sfd;
	struct writer_arg wc = {0, size, 11, 2, 1, 0};
	pthread_t t;
	uint64_t got;
	double t0 = now_s();

	make_pair(lfd, &addr, len, &cfd, &sfd);
	wc.fd = cfd;
	pthread_create(&t, NULL, writer_main, &wc);
	got = read_stream(sfd, UINT64_MAX, 11, &c, 16384, 1000);
	pthread_join(t, NULL);
	printf(
	    "{\"ok\":%s,\"bytes\":%llu,\"seconds\":%.6f,",
	    (got == size && wc.result == (int64_t)size && !c.mismatch && !c.eagain && !c.read_error)
		? "true"
		: "false",
	    (unsigned long long)got, now_s() - t0);
	print_counters(&c);
	printf("}\n");
	close(cfd);
	close(sfd);
	close(lfd);
	return 0;
}

/* ---- a receiver that stops reading ---- */

struct tail_arg {
	int fd;
	uint64_t from;
	uint64_t size;
	int64_t result;
};

/* Sends the rest of the stream after the reader has drained what was queued, so it blocks in
 * recv(). */
static void *tail_main(void *p)
{
	struct tail_arg *a = p;
	uint8_t buf[4096];
	uint64_t off = 0;

	/* About 50 pieces 2 ms apart; a short write (a nearly full send buffer) sends its rest as
	 * one more piece, so the bound is generous. */
	for (int i = 0; i < 1000 && off < a->size; i++) {
		size_t n = a->size - off < sizeof(buf) ? a->size - off : sizeof(buf);
		ssize_t m;

		usleep(2000);
		fill(buf, n, 13, a->from + off);
		m = send(a->fd, buf, n, MSG_NOSIGNAL);
		if (m < 0 && wait_ready(a->fd, POLLOUT)) {
			i--;
			continue;
		}
		if (m < 0) {
			a->result = -errno;
			return NULL;
		}
		off += (uint64_t)m;
	}
	shutdown(a->fd, SHUT_WR);
	a->result = (int64_t)off;
	return NULL;
}

static int cmd_stall(uint64_t cap)
{
	struct sockaddr_storage addr;
	socklen_t len;
	struct counters c = {0, 0, -1, 0};
	int lfd = listen_loopback(&addr, &len), cfd, sfd;
	uint8_t *buf = malloc(65536);
	uint64_t queued = 0, got;
	struct tail_arg tail = {0, 0, 50 * 4096, 0};
	pthread_t t;
	int capped = 0;

	if (!buf)
		die("malloc");
	make_pair(lfd, &addr, len, &cfd, &sfd);
	/* Phase 1: the server reads nothing; the client queues until the kernel pushes back for 300
	 * ms. */
	for (;;) {
		ssize_t n;

		if (queued >= cap) {
			capped = 1;
			break;
		}
		fill(buf, 65536, 13, queued);
		n = send(cfd, buf, 65536, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			queued += (uint64_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pfd = {cfd, POLLOUT, 0};

			if (poll(&pfd, 1, 300) == 0)
				break;
			continue;
		}
		die("send");
	}
	free(buf);
	/* Phase 2: blocking reads of everything, while a late tail arrives in small pieces. */
	tail.fd = cfd;
	tail.from = queued;
	pthread_create(&t, NULL, tail_main, &tail);
	got = read_stream(sfd, UINT64_MAX, 13, &c, 65536, 0);
	pthread_join(t, NULL);
	printf("{\"ok\":%s,\"queued\":%llu,\"capped\":%s,\"bytes\":%llu,",
	       (!capped && tail.result == (int64_t)tail.size && got == queued + tail.size &&
		!c.mismatch && !c.eagain && !c.read_error)
		   ? "true"
		   : "false",
	       (unsigned long long)queued, capped ? "true" : "false", (unsigned long long)got);
	print_counters(&c);
	printf("}\n");
	close(cfd);
	close(sfd);
	close(lfd);
	return 0;
}

/* ---- a connection held open, to look at the map while it exists ---- */

static int cmd_hold(int seconds)
{
	struct sockaddr_storage addr;
	socklen_t len;
	struct counters c = {0, 0, -1, 0};
	int lfd = listen_loopback(&addr, &len), cfd, sfd;
	uint8_t buf[1024];

	make_pair(lfd, &addr, len, &cfd, &sfd);
	fill(buf, sizeof(buf), 3, 0);
	if (write_full(cfd, buf, sizeof(buf)) || write_full(sfd, buf, sizeof(buf)))
		die("send");
	read_stream(sfd, sizeof(buf), 3, &c, sizeof(buf), 0);
	read_stream(cfd, sizeof(buf), 3, &c, sizeof(buf), 0);
	printf("{\"ok\":%s,\"holding\":true}\n", !c.mismatch && !c.eagain ? "true" : "false");
	fflush(stdout);
	sleep((unsigned)seconds);
	close(cfd);
	close(sfd);
	close(lfd);
	return 0;
}

/* ---- benchmarks ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int read_full(int fd, uint8_t *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t m = recv(fd, buf + got, n - got, 0);

		if (m <= 0) {
			if (m < 0 && (errno == EINTR || wait_ready(fd, POLLIN)))
				continue;
			return -1;
		}
		got += (size_t)m;
	}
	return 0;
}

static int write_full(int fd, const uint8_t *buf, size_t n)
{
	size_t sent = 0;

	while (sent < n) {
		ssize_t m = send(fd, buf + sent, n - sent, MSG_NOSIGNAL);

		if (m < 0) {
			if (errno == EINTR || wait_ready(fd, POLLOUT))
				continue;
			return -1;
		}
		sent += (size_t)m;
	}
	return 0;
}

struct echo_arg {
	int fd;
	size_t size;
	int iters;
};

static void *echo_main(void *p)
{
	struct echo_arg *e = p;
	uint8_t *buf = malloc(e->size);

	pin_to(server_cpu);
	for (int i = 0; i < e->iters; i++) {
		if (read_full(e->fd, buf, e->size) || write_full(e->fd, buf, e->size))
			break;
	}
	free(buf);
	return NULL;
}

static int cmd_pingpong(size_t size, int iters)
{
	struct sockaddr_storage addr;
	socklen_t len;
	int lfd = listen_loopback(&addr, &len), cfd, sfd, one = 1, warm = iters / 10;
	uint8_t *buf = malloc(size);
	double *lat = calloc((size_t)iters, sizeof(double));
	struct echo_arg e;
	pthread_t t;
	int done = 0;

	make_pair(lfd, &addr, len, &cfd, &sfd);
	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	e = (struct echo_arg){sfd, size, iters + warm};
	fill(buf, size, 1, 0);
	pthread_create(&t, NULL, echo_main, &e);
	pin_to(client_cpu);
	for (int i = 0; i < iters + warm; i++) {
		double t0 = now_s();

		if (write_full(cfd, buf, size) || read_full(cfd, buf, size))
			break;
		if (i >= warm)
			lat[done++] = (now_s() - t0) * 1e6;
	}
	pthread_join(t, NULL);
	qsort(lat, (size_t)done, sizeof(double), cmp_double);
	printf("{\"ok\":%s,\"iters\":%d,\"p50us\":%.3f,\"p99us\":%.3f}\n",
	       done == iters ? "true" : "false", done, done ? lat[done / 2] : 0,
	       done ? lat[(done * 99) / 100] : 0);
	close(cfd);
	close(sfd);
	close(lfd);
	return 0;
}

static int cmd_bulk(size_t size, uint64_t total)
{
	struct sockaddr_storage addr;
	socklen_t len;
	int lfd = listen_loopback(&addr, &len), cfd, sfd;
	uint8_t *buf = malloc(size), *rbuf = malloc(1 << 20);
	uint64_t sent = 0, got = 0;
	double t0;
	pid_t pid;

	make_pair(lfd, &addr, len, &cfd, &sfd);
	fill(buf, size, 1, 0);
	/* The reader is its own process, as a real receiving application would be. */
	pid = fork();
	if (pid == 0) {
		close(cfd);
		pin_to(server_cpu);
		while (got < total) {
			ssize_t n = recv(sfd, rbuf, 1 << 20, 0);

			if (n < 0 && wait_ready(sfd, POLLIN))
				continue;
			if (n <= 0)
				break;
			got += (uint64_t)n;
		}
		_exit(got == total ? 0 : 1);
	}
	close(sfd);
	pin_to(client_cpu);
	t0 = now_s();
	while (sent < total) {
		size_t n = total - sent < size ? total - sent : size;

		if (write_full(cfd, buf, n))
			break;
		sent += n;
	}
	{
		int status = 0;
		double secs;

		waitpid(pid, &status, 0);
		secs = now_s() - t0;
		printf("{\"ok\":%s,\"bytes\":%llu,\"seconds\":%.6f,\"MBps\":%.1f}\n",
		       WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "true" : "false",
		       (unsigned long long)sent, secs, (double)sent / secs / 1e6);
	}
	close(cfd);
	close(lfd);
	return 0;
}

struct rpc_server {
	int lfd;
	size_t size;
	int count;
};

static void *rpc_server_main(void *p)
{
	struct rpc_server *s = p;
	uint8_t *buf = malloc(s->size);

	pin_to(server_cpu);
	for (int i = 0; i < s->count; i++) {
		int fd = accept_from(s->lfd);

		if (fd < 0)
			break;
		if (!read_full(fd, buf, s->size))
			write_full(fd, buf, s->size);
		close(fd);
	}
	free(buf);
	return NULL;
}

static int cmd_connrate(size_t size, int count)
{
	struct sockaddr_storage addr;
	socklen_t len;
	int lfd = listen_loopback(&addr, &len), done = 0;
	struct rpc_server s = {lfd, size, count};
	uint8_t *buf = malloc(size);
	pthread_t t;
	double t0;

	fill(buf, size, 1, 0);
	pthread_create(&t, NULL, rpc_server_main, &s);
	pin_to(client_cpu);
	t0 = now_s();
	for (int i = 0; i < count; i++) {
		int fd = connect_to(&addr, len);
		struct linger lg = {1, 0};

		if (write_full(fd, buf, size) || read_full(fd, buf, size)) {
			close(fd);
			break;
		}
		/* RST on close keeps thousands of short connections from filling the port range
		 * (TIME_WAIT). */
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
		done++;
	}
	{
		double secs = now_s() - t0;

		pthread_join(t, NULL);
		printf("{\"ok\":%s,\"connections\":%d,\"seconds\":%.6f,\"perSecond\":%.1f}\n",
		       done == count ? "true" : "false", done, secs, done / secs);
	}
	close(lfd);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: fastpath-io [-6] [-n] [-b] [-p PORT] [-c CPU,CPU] "
			"xfer|halfclose|sendfile|concurrent|peerclose|slowreader|"
			"stall|hold|pingpong|bulk|connrate ARGS\n");
	exit(64);
}

static uint64_t arg_u64(char **argv, int i, int argc, const char *name)
{
	char *end;
	unsigned long long v;

	if (i >= argc)
		usage();
	errno = 0;
	v = strtoull(argv[i], &end, 10);
	if (errno || *end) {
		fprintf(stderr, "%s: expected a non-negative integer, got %s\n", name, argv[i]);
		exit(64);
	}
	return v;
}

int main(int argc, char **argv)
{
	int i = 1;

	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-6"))
			family = AF_INET6;
		else if (!strcmp(argv[i], "-n"))
			nonblock = 1;
		else if (!strcmp(argv[i], "-b"))
			accept_blocking = 1;
		else if (!strcmp(argv[i], "-p") && i + 1 < argc)
			listen_port = (int)arg_u64(argv, ++i, argc, "PORT");
		else if (!strcmp(argv[i], "-c") && i + 1 < argc &&
			 sscanf(argv[++i], "%d,%d", &client_cpu, &server_cpu) == 2)
			continue;
		else
			usage();
	}
	if (i >= argc)
		usage();
	const char *cmd = argv[i++];

	if (!strcmp(cmd, "xfer")) {
		if (i + 1 >= argc)
			usage();
		return cmd_xfer(arg_u64(argv, i, argc, "SIZE"), parse_pattern(argv[i + 1]));
	}
	if (!strcmp(cmd, "halfclose"))
		return cmd_halfclose(arg_u64(argv, i, argc, "SIZE"));
	if (!strcmp(cmd, "sendfile"))
		return cmd_sendfile(arg_u64(argv, i, argc, "SIZE"));
	if (!strcmp(cmd, "concurrent"))
		return cmd_concurrent((int)arg_u64(argv, i, argc, "N"),
				      arg_u64(argv, i + 1, argc, "SIZE"));
	if (!strcmp(cmd, "peerclose"))
		return cmd_peerclose(arg_u64(argv, i, argc, "SIZE"));
	if (!strcmp(cmd, "slowreader"))
		return cmd_slowreader(arg_u64(argv, i, argc, "SIZE"));
	if (!strcmp(cmd, "stall"))
		return cmd_stall(arg_u64(argv, i, argc, "CAP"));
	if (!strcmp(cmd, "hold"))
		return cmd_hold((int)arg_u64(argv, i, argc, "SECONDS"));
	if (!strcmp(cmd, "pingpong"))
		return cmd_pingpong(arg_u64(argv, i, argc, "SIZE"),
				    (int)arg_u64(argv, i + 1, argc, "ITERS"));
	if (!strcmp(cmd, "bulk"))
		return cmd_bulk(arg_u64(argv, i, argc, "SIZE"),
				arg_u64(argv, i + 1, argc, "TOTAL"));
	if (!strcmp(cmd, "connrate"))
		return cmd_connrate(arg_u64(argv, i, argc, "SIZE"),
				    (int)arg_u64(argv, i + 1, argc, "COUNT"));
	usage();
	return 64;
}
