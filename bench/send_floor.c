/*
 * send_floor.c - the kernel's floor under a fan-out on this machine: one small
 * frame to each of N loopback TCP sockets, from one pinned core, the way a
 * gateway writes one event to N subscribers. A receiver thread on another core
 * drains every socket (epoll), as lq_bench does.
 *
 * Three ways of writing the same bytes, measured in the same run:
 *   send      one send() per socket (what livequeryd does at a fixed rate)
 *   batch16   16 frames per send() (what it does when a connection has a backlog)
 *   io_uring  one io_uring_enter for all N sends (built only with liburing)
 * Reports sender CPU per frame and the wall time of one fan-out of N.
 *
 *   send_floor [--connections N] [--rounds R] [--frame BYTES] [--server-cpu C] [--client-cpu C]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef LQ_HAVE_URING
#include <liburing.h>
#endif

static int nconn = 1000, rounds = 200, frame = 540, server_cpu = 0, client_cpu = 1;
static int *tx, *rx;
static atomic_long received;
static atomic_int stop;

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void pin(int cpu)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof(s), &s);
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static void *receiver(void *arg)
{
    static char buf[1 << 16];
    struct epoll_event ev[256];
    int ep = epoll_create1(0);

    (void)arg;
    pin(client_cpu);
    for (int i = 0; i < nconn; i++) {
        struct epoll_event e = {.events = EPOLLIN, .data.fd = rx[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, rx[i], &e) != 0)
            die("epoll_ctl");
    }
    while (!atomic_load(&stop)) {
        int n = epoll_wait(ep, ev, 256, 100);
        for (int i = 0; i < n; i++) {
            ssize_t r = read(ev[i].data.fd, buf, sizeof(buf));
            if (r > 0)
                atomic_fetch_add(&received, r);
        }
    }
    close(ep);
    return NULL;
}

/* Waits until the receiver has everything sent so far. */
static void drained(long expect)
{
    double t0 = mono_ms();
    while (atomic_load(&received) < expect) {
        if (mono_ms() - t0 > 10000) {
            fprintf(stderr, "send_floor: the receiver fell behind (%ld of %ld bytes)\n",
                    atomic_load(&received), expect);
            exit(1);
        }
        usleep(200);
    }
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("send");
        }
        p += w;
        n -= (size_t)w;
    }
}

/* One mode: rounds fan-outs with a pause between them (the receiver idles, as
 * subscribers do between events). Prints one table row. */
static void run(const char *name, int per_send, int uring)
{
    char *msg = malloc((size_t)frame * (size_t)per_send);
    double cpu = 0, wall = 0;
    long sent = 0;
    long base = atomic_load(&received);

    memset(msg, 'x', (size_t)frame * (size_t)per_send);
#ifdef LQ_HAVE_URING
    struct io_uring ring;
    if (uring && io_uring_queue_init((unsigned)nconn, &ring, 0) != 0) {
        printf("| %s | unavailable (io_uring_queue_init failed) | | |\n", name);
        free(msg);
        return;
    }
#else
    if (uring) {
        printf("| %s | not built (no liburing) | | |\n", name);
        free(msg);
        return;
    }
#endif
    for (int r = 0; r < rounds; r++) {
        double c0 = cpu_s(), w0 = mono_ms();
        if (!uring) {
            for (int i = 0; i < nconn; i++)
                send_all(tx[i], msg, (size_t)frame * (size_t)per_send);
        }
#ifdef LQ_HAVE_URING
        else {
            for (int i = 0; i < nconn; i++)
                io_uring_prep_send(io_uring_get_sqe(&ring), tx[i], msg, (size_t)frame, MSG_NOSIGNAL);
            if (io_uring_submit_and_wait(&ring, (unsigned)nconn) < 0)
                die("io_uring_submit_and_wait");
            struct io_uring_cqe *cqe;
            unsigned head, k = 0;
            io_uring_for_each_cqe(&ring, head, cqe)
            {
                if (cqe->res != frame) {
                    fprintf(stderr, "send_floor: io_uring send returned %d\n", cqe->res);
                    exit(1);
                }
                k++;
            }
            io_uring_cq_advance(&ring, k);
        }
#endif
        cpu += cpu_s() - c0;
        wall += mono_ms() - w0;
        sent += (long)nconn * frame * per_send;
        drained(base + sent);
        usleep(10000);
    }
#ifdef LQ_HAVE_URING
    if (uring)
        io_uring_queue_exit(&ring);
#endif
    double frames = (double)rounds * nconn * per_send;
    printf("| %s | %d | %.2f µs | %.2f ms | %.0f |\n", name, per_send, cpu * 1e6 / frames,
           wall / rounds, frames / cpu);
    free(msg);
}

static int arg(int argc, char **argv, int *i, const char *name, int *out)
{
    if (strcmp(argv[*i], name) != 0 || *i + 1 >= argc)
        return 0;
    *out = atoi(argv[++*i]);
    return 1;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!arg(argc, argv, &i, "--connections", &nconn) && !arg(argc, argv, &i, "--rounds", &rounds) &&
            !arg(argc, argv, &i, "--frame", &frame) && !arg(argc, argv, &i, "--server-cpu", &server_cpu) &&
            !arg(argc, argv, &i, "--client-cpu", &client_cpu)) {
            fprintf(stderr, "usage: send_floor [--connections N] [--rounds R] [--frame BYTES] "
                            "[--server-cpu C] [--client-cpu C]\n");
            return 2;
        }
    if (nconn < 1 || rounds < 1 || frame < 1 || frame > 65536)
        return 2;
    tx = calloc((size_t)nconn, sizeof(int));
    rx = calloc((size_t)nconn, sizeof(int));

    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 4096) ||
        getsockname(l, (struct sockaddr *)&a, &al))
        die("listen");
    for (int i = 0; i < nconn; i++) {
        int one = 1;
        rx[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (rx[i] < 0 || connect(rx[i], (struct sockaddr *)&a, sizeof(a)))
            die("connect");
        if ((tx[i] = accept(l, NULL, NULL)) < 0)
            die("accept");
        setsockopt(tx[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    pthread_t t;
    pthread_create(&t, NULL, receiver, NULL);
    pin(server_cpu);
    printf("%d loopback TCP sockets, frames of %d bytes, %d fan-outs per row; sender on core %d, "
           "receiver (epoll, idle between fan-outs) on core %d.\n\n",
           nconn, frame, rounds, server_cpu, client_cpu);
    printf("| writes | frames per write | sender CPU per frame | one fan-out to all (wall) | frames per CPU-second |\n");
    printf("|---|---:|---:|---:|---:|\n");
    run("send(), one frame each", 1, 0);
    run("send(), 16 frames each", 16, 0);
    run("io_uring, one submit for all", 1, 1);
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    return 0;
}
