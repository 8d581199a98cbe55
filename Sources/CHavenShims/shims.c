#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/mman.h>
#include "CHavenShims.h"
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/random.h>
#endif

int haven_o_noatime(void) { return O_NOATIME; }
int haven_o_tmpfile(void) {
#ifdef O_TMPFILE
    return O_TMPFILE;
#else
    return 0;
#endif
}
int haven_o_direct(void) {
#ifdef O_DIRECT
    return O_DIRECT;
#else
    return 0;
#endif
}
int haven_fadvise_sequential(int fd) { return posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL); }

int haven_set_parent_death_signal(int sig) {
#ifdef __linux__
    return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0);
#else
    (void)sig;
    return -1;
#endif
}

#define HAVEN_MAX_SIGNAL 65
#define HAVEN_MAX_PIPES 8
static volatile int haven_signal_fds[HAVEN_MAX_SIGNAL][HAVEN_MAX_PIPES];
static volatile int haven_signal_fd_count[HAVEN_MAX_SIGNAL];

static void haven_on_signal(int sig) {
    int saved = errno;
    if (sig > 0 && sig < HAVEN_MAX_SIGNAL) {
        unsigned char b = (unsigned char)sig;
        for (int i = 0; i < haven_signal_fd_count[sig]; i++) {
            ssize_t r = write(haven_signal_fds[sig][i], &b, 1);
            (void)r;
        }
    }
    errno = saved;
}

int haven_signal_pipe(int sig) {
    if (sig <= 0 || sig >= HAVEN_MAX_SIGNAL || haven_signal_fd_count[sig] >= HAVEN_MAX_PIPES) return -1;
    int fds[2];
    if (pipe(fds) != 0) return -1;
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    haven_signal_fds[sig][haven_signal_fd_count[sig]] = fds[1];
    haven_signal_fd_count[sig] += 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = haven_on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(sig, &sa, NULL) != 0) return -1;
    return fds[0];
}

int haven_trim_code_pages(void) {
#ifdef __linux__
    FILE *maps = fopen("/proc/self/maps", "re");
    if (!maps) return -1;
    char line[4096];
    int trimmed = 0;
    while (fgets(line, sizeof line, maps)) {
        unsigned long start, end;
        char perms[5];
        int path = 0;
        if (sscanf(line, "%lx-%lx %4s %*s %*s %*s %n", &start, &end, perms, &path) < 3) continue;
        // Only executable, private, file-backed code: never written, so dropping its pages loses nothing.
        if (strcmp(perms, "r-xp") != 0 || path == 0 || line[path] != '/') continue;
        if (madvise((void *)start, end - start, MADV_RANDOM) == 0 &&
            madvise((void *)start, end - start, MADV_DONTNEED) == 0) trimmed++;
    }
    fclose(maps);
    return trimmed;
#else
    return 0;
#endif
}

int haven_keep_freed_memory(size_t largest_reused, size_t kept_free) {
#ifdef __GLIBC__
    if (largest_reused > INT_MAX || kept_free > INT_MAX) return -1;
    // Setting either also stops glibc from moving the thresholds by itself.
    if (mallopt(M_MMAP_THRESHOLD, (int)largest_reused) != 1) return -1;
    if (mallopt(M_TRIM_THRESHOLD, (int)kept_free) != 1) return -1;
#else
    (void)largest_reused;
    (void)kept_free;
#endif
    return 0;
}

int haven_random_bytes(void *buffer, size_t count) {
#ifdef __linux__
    unsigned char *p = buffer;
    while (count > 0) {
        ssize_t n = getrandom(p, count, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        count -= (size_t)n;
    }
    return 0;
#else
    arc4random_buf(buffer, count);
    return 0;
#endif
}
