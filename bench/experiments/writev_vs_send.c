/* What a writev costs the kernel against send, per call, on loopback TCP:
 * the measurement behind Portico writing one piece by send (bench/RESULTS.md,
 * issue 22, tenth session). The writer and a draining reader share one core.
 * Build and run: gcc -O2 -o /tmp/wv bench/experiments/writev_vs_send.c -lpthread &&
 *   for m in 0 1 2 3; do taskset -c 0 /tmp/wv $m 300000 200; done
 * Modes: 0 writev of one iovec, 1 send, 2 writev of two iovecs, 3 write. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <time.h>
#include <sys/resource.h>
static void *reader(void *arg) { int fd = *(int*)arg; char buf[65536]; while (read(fd, buf, sizeof buf) > 0); return NULL; }
static double cpu(void){ struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t); return t.tv_sec+t.tv_nsec/1e9; }
int main(int argc, char **argv) {
  int mode = atoi(argv[1]); long n = atol(argv[2]); int len = atoi(argv[3]);
  int l = socket(AF_INET, SOCK_STREAM, 0); struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_addr.s_addr = htonl(0x7f000001);
  bind(l, (void*)&a, sizeof a); listen(l, 1); socklen_t al = sizeof a; getsockname(l, (void*)&a, &al);
  int c = socket(AF_INET, SOCK_STREAM, 0); connect(c, (void*)&a, sizeof a); int s = accept(l, NULL, NULL);
  int one = 1; setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  pthread_t t; pthread_create(&t, NULL, reader, &s);
  char *buf = malloc(len); memset(buf, 'x', len); char *b2 = malloc(len); memset(b2,'y',len);
  double t0 = cpu();
  for (long i = 0; i < n; i++) {
    if (mode == 0) { struct iovec v = { buf, len }; writev(c, &v, 1); }
    else if (mode == 1) { send(c, buf, len, MSG_NOSIGNAL); }
    else if (mode == 2) { struct iovec v[2] = { {buf, len/2}, {b2, len - len/2} }; writev(c, v, 2); }
    else { write(c, buf, len); }
  }
  double t1 = cpu();
  printf("mode %d: %.0f ns/call (writer thread CPU)\n", mode, (t1 - t0) / n * 1e9);
  shutdown(c, SHUT_WR); pthread_join(t, NULL); return 0;
}
